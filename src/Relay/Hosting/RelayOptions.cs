namespace Relay.Server.Hosting;

/// <summary><c>Relay</c>: settings that are not owned by one protocol service.</summary>
public sealed class RelayOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay";

    /// <summary>Where state lives (SQLite and generated credentials). Relative paths are against the working directory.</summary>
    public string DataDirectory { get; set; } = "./data";
}

/// <summary><c>Relay:Http</c>: the operator-facing HTTP port (health, metrics; later the push API).</summary>
public sealed class HttpOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Http";

    /// <summary>TCP port.</summary>
    public int Port { get; set; } = 8080;

    /// <summary>Addresses to listen on; empty means all.</summary>
    public IList<string> ListenAddresses { get; } = [];
}

/// <summary><c>Relay:Tls</c>: one PEM certificate for every TLS listener.</summary>
public sealed class TlsOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Tls";

    /// <summary>PEM certificate (chain) file.</summary>
    public string? CertificatePath { get; set; }

    /// <summary>PEM private key file.</summary>
    public string? KeyPath { get; set; }

    /// <summary>True when both paths are set.</summary>
    public bool Enabled => !string.IsNullOrWhiteSpace(CertificatePath) && !string.IsNullOrWhiteSpace(KeyPath);
}
