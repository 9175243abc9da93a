namespace Relay.Server.Api;

/// <summary><c>Relay:Api</c>: the operator HTTP API on <c>Relay:Http:Port</c>.</summary>
public sealed class ApiOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Api";

    /// <summary>
    /// Accepted as an admin bearer token, for automation and first setup. Unset: the first start
    /// generates one, prints it once and keeps only its hash in the data directory.
    /// </summary>
    public string? BootstrapToken { get; set; }

    /// <summary>Largest request body a <c>/v1</c> endpoint reads, in bytes; larger ones get 413.</summary>
    public int MaxRequestBodyBytes { get; set; } = 65_536;

    /// <summary>
    /// Requests with a missing or wrong bearer token a source (IPv4 address or IPv6 /64) may make per minute,
    /// in a burst; beyond it the source gets 429 without its token being looked at. 0 turns the limit off.
    /// </summary>
    public int AuthFailuresPerMinutePerIp { get; set; } = 10;

    /// <summary>Per-token request rate limit (429 beyond it).</summary>
    public ApiRateLimitOptions RateLimit { get; set; } = new();
}

/// <summary><c>Relay:Api:RateLimit</c>: a token bucket per API token.</summary>
public sealed class ApiRateLimitOptions
{
    /// <summary>False turns the limit off.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Sustained requests per second per token (fractions allowed).</summary>
    public double RequestsPerSecond { get; set; } = 100;

    /// <summary>Requests a token may make at once after being idle.</summary>
    public int Burst { get; set; } = 200;
}
