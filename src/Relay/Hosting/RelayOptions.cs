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

    /// <summary>TCP port (plain HTTP).</summary>
    public int Port { get; set; } = 8080;

    /// <summary>
    /// HTTPS port: the same API, health, metrics and MQTT over WebSocket (<c>wss</c>), with the <c>Relay:Tls</c>
    /// certificate. Served only when a certificate is configured; 0 turns it off.
    /// </summary>
    public int TlsPort { get; set; } = 8443;

    /// <summary>Addresses to listen on; empty means all.</summary>
    public IList<string> ListenAddresses { get; } = [];
}

/// <summary>
/// <c>Relay:Tls</c>: one PEM certificate (with its chain) for every TLS listener, reloaded when the files change.
/// </summary>
public sealed class TlsOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Tls";

    /// <summary>PEM certificate file: the leaf first, then its intermediates (certbot's <c>fullchain.pem</c>).</summary>
    public string? CertificatePath { get; set; }

    /// <summary>PEM private key file (unencrypted PKCS#8, PKCS#1 or SEC1; certbot's <c>privkey.pem</c>).</summary>
    public string? KeyPath { get; set; }

    /// <summary>True when both paths are set.</summary>
    public bool Enabled => !string.IsNullOrWhiteSpace(CertificatePath) && !string.IsNullOrWhiteSpace(KeyPath);
}
