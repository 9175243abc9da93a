namespace Relay.Api;

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
}
