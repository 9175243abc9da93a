using Microsoft.Extensions.Options;

namespace Relay.Server.Push.Commands;

/// <summary><c>Relay:Push</c>: limits of the command lifecycle.</summary>
public sealed class PushOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Push";

    /// <summary>Commands a device may have waiting (queued, not yet delivered); one more is refused with 429.</summary>
    public int MaxQueuedCommandsPerDevice { get; set; } = 1000;

    /// <summary>Largest command payload in bytes (JSON text, or the decoded bytes of base64); larger is refused with 413.</summary>
    public int MaxPayloadBytes { get; set; } = 64 * 1024;

    /// <summary>TTL when a request names none.</summary>
    public int DefaultTtlSeconds { get; set; } = 3600;

    /// <summary>Longest TTL a request may ask for.</summary>
    public int MaxTtlSeconds { get; set; } = 7 * 86_400;

    /// <summary>Concurrent <c>?wait=</c> long-polls; one more is refused with 429.</summary>
    public int MaxWaiters { get; set; } = 10_000;

    /// <summary>Devices one broadcast may address; a tag with more is refused with 409.</summary>
    public int MaxBroadcastDevices { get; set; } = 10_000;

    /// <summary>
    /// Bytes one API token's commands that are not final yet may hold, each command counting its payload plus
    /// <see cref="CommandCost.PerCommandBytes"/>; a request that would pass it is refused with 429 (review H4).
    /// </summary>
    public long MaxQueuedBytesPerToken { get; set; } = 256L * 1024 * 1024;

    /// <summary>
    /// How far ahead a command's <c>notBefore</c> may lie. A held command keeps its place in its device's queue
    /// and its bytes in its token's quota until it goes, so this bounds how long those stay taken.
    /// </summary>
    public int MaxNotBeforeDays { get; set; } = 30;

    /// <summary>Days a command is kept once final (succeeded, failed, expired, canceled); then it and its transitions are deleted (review M4).</summary>
    public int RetainFinishedDays { get; set; } = 30;
}

/// <summary>Checks <c>Relay:Push</c>, naming each bad key.</summary>
internal sealed class PushOptionsValidator : IValidateOptions<PushOptions>
{
    public ValidateOptionsResult Validate(string? name, PushOptions options)
    {
        var errors = new List<string>();
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{PushOptions.SectionName}:{key}: {problem}");
            }
        }

        Check(options.MaxQueuedCommandsPerDevice is >= 1 and <= 1_000_000, nameof(PushOptions.MaxQueuedCommandsPerDevice), "must be 1..1000000");
        Check(options.MaxPayloadBytes is >= 1 and <= 16 * 1024 * 1024, nameof(PushOptions.MaxPayloadBytes), "must be 1..16777216");
        Check(options.MaxTtlSeconds is >= 1 and <= 365 * 86_400, nameof(PushOptions.MaxTtlSeconds), "must be 1..31536000");
        Check(options.DefaultTtlSeconds >= 1 && options.DefaultTtlSeconds <= options.MaxTtlSeconds, nameof(PushOptions.DefaultTtlSeconds), "must be 1..MaxTtlSeconds");
        Check(options.MaxWaiters is >= 0 and <= 1_000_000, nameof(PushOptions.MaxWaiters), "must be 0..1000000");
        Check(options.MaxBroadcastDevices is >= 1 and <= 1_000_000, nameof(PushOptions.MaxBroadcastDevices), "must be 1..1000000");
        Check(options.MaxQueuedBytesPerToken is >= 1024 and <= 1L << 40, nameof(PushOptions.MaxQueuedBytesPerToken), "must be 1024..1099511627776");
        Check(options.MaxNotBeforeDays is >= 1 and <= 365, nameof(PushOptions.MaxNotBeforeDays), "must be 1..365");
        Check(options.RetainFinishedDays is >= 1 and <= 36_500, nameof(PushOptions.RetainFinishedDays), "must be 1..36500");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
