using Microsoft.Extensions.Options;

namespace Relay.Server.Twins;

/// <summary><c>Relay:Twins</c>: the bounds of device state documents (desired and reported).</summary>
public sealed class TwinOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Twins";

    /// <summary>Deepest nesting any configuration may allow: documents are walked with explicit stacks, but kept shallow.</summary>
    public const int DepthCeiling = 32;

    /// <summary>
    /// Largest document in bytes (compact UTF-8 JSON), for a patch as sent and for the document it makes;
    /// larger is refused (HTTP 413; a device's report is dropped and counted).
    /// </summary>
    public int MaxDocumentBytes { get; set; } = 16 * 1024;

    /// <summary>Deepest nesting of objects and arrays in a document, the top-level object being 1.</summary>
    public int MaxDepth { get; set; } = 8;

    /// <summary>Property names in one document, counted at every level.</summary>
    public int MaxKeys { get; set; } = 512;

    /// <summary>
    /// Updates (API requests and device reports) waiting for the one writer at once; one more is refused (HTTP
    /// 503; a report is not acknowledged, so the device sends it again).
    /// </summary>
    public int MaxPendingUpdates { get; set; } = 1024;

    internal TwinLimits Limits => new(MaxDocumentBytes, MaxDepth, MaxKeys);
}

/// <summary>Checks <c>Relay:Twins</c>, naming each bad key.</summary>
internal sealed class TwinOptionsValidator : IValidateOptions<TwinOptions>
{
    public ValidateOptionsResult Validate(string? name, TwinOptions options)
    {
        var errors = new List<string>();
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{TwinOptions.SectionName}:{key}: {problem}");
            }
        }

        Check(
            options.MaxDocumentBytes is >= 64 and <= 1024 * 1024,
            nameof(TwinOptions.MaxDocumentBytes),
            $"must be 64..1048576 (was {options.MaxDocumentBytes})");
        Check(
            options.MaxDepth is >= 1 and <= TwinOptions.DepthCeiling,
            nameof(TwinOptions.MaxDepth),
            $"must be 1..{TwinOptions.DepthCeiling} (was {options.MaxDepth})");
        Check(options.MaxKeys is >= 1 and <= 100_000, nameof(TwinOptions.MaxKeys), $"must be 1..100000 (was {options.MaxKeys})");
        Check(
            options.MaxPendingUpdates is >= 1 and <= 1_000_000,
            nameof(TwinOptions.MaxPendingUpdates),
            $"must be 1..1000000 (was {options.MaxPendingUpdates})");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
