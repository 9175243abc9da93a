using Microsoft.Extensions.Options;

namespace Relay.Server.Telemetry;

/// <summary><c>Relay:Telemetry</c>: where the server's meters go besides <c>/metrics</c>.</summary>
public sealed class TelemetryOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Telemetry";

    /// <summary>OTLP export of every <c>Relay.*</c> meter; off unless an endpoint is set.</summary>
    public OtlpOptions Otlp { get; } = new();
}

/// <summary><c>Relay:Telemetry:Otlp</c>: push the meters to an OpenTelemetry collector.</summary>
public sealed class OtlpOptions
{
    /// <summary>The collector's URL, e.g. <c>http://collector:4317</c> (gRPC) or <c>http://collector:4318/v1/metrics</c> (HTTP); unset = off.</summary>
    public string? Endpoint { get; set; }

    /// <summary>The OTLP transport.</summary>
    public OtlpProtocol Protocol { get; set; } = OtlpProtocol.Grpc;

    /// <summary>Seconds between two exports.</summary>
    public int ExportIntervalSeconds { get; set; } = 60;

    /// <summary>True when an endpoint is set.</summary>
    public bool Enabled => !string.IsNullOrWhiteSpace(Endpoint);
}

/// <summary>How OTLP travels.</summary>
public enum OtlpProtocol
{
    /// <summary>OTLP/gRPC (port 4317 by convention).</summary>
    Grpc,

    /// <summary>OTLP/HTTP with protobuf bodies (port 4318 by convention); the endpoint is the full URL, path included.</summary>
    HttpProtobuf,
}

/// <summary>Checks <c>Relay:Telemetry</c>.</summary>
internal sealed class TelemetryOptionsValidator : IValidateOptions<TelemetryOptions>
{
    public ValidateOptionsResult Validate(string? name, TelemetryOptions options)
    {
        var errors = new List<string>();
        var otlp = options.Otlp;
        if (otlp.Enabled && !(Uri.TryCreate(otlp.Endpoint, UriKind.Absolute, out var endpoint) && endpoint.Scheme is "http" or "https"))
        {
            errors.Add($"Relay:Telemetry:Otlp:Endpoint: must be an absolute http:// or https:// URL (was '{otlp.Endpoint}')");
        }

        if (otlp.ExportIntervalSeconds is < 1 or > 86_400)
        {
            errors.Add($"Relay:Telemetry:Otlp:ExportIntervalSeconds: must be between 1 and 86400 (was {otlp.ExportIntervalSeconds})");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
