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

    /// <summary>
    /// Connections open at once on the HTTP and HTTPS ports together (API, console, MQTT over WebSocket); past
    /// it a new connection is closed before TLS or HTTP and counted, so a connection flood costs a socket and
    /// nothing more.
    /// </summary>
    public int MaxConnections { get; set; } = 10_000;

    /// <summary>Connections one client address may hold open on the HTTP and HTTPS ports (an IPv6 address counts alone).</summary>
    public int MaxConnectionsPerIp { get; set; } = 100;

    /// <summary>
    /// Time a client has to send a request's line and headers (HTTP/1.1), from the connection's start or the
    /// previous response: a client that trickles them (slowloris) is closed when it runs out.
    /// </summary>
    public int RequestHeadersTimeoutSeconds { get; set; } = 10;

    /// <summary>
    /// Largest request body any endpoint reads; an endpoint that takes more (a command payload up to
    /// <c>Relay:Push:MaxPayloadBytes</c>) raises it for its own requests.
    /// </summary>
    public long MaxRequestBodyBytes { get; set; } = 1024 * 1024;
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
