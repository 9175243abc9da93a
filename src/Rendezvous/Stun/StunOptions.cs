namespace Relay.Rendezvous.Stun;

/// <summary>
/// <c>Relay:Stun</c>. Key names are a contract with operators' scripts: rename nothing without an alias.
/// </summary>
public sealed class StunOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Stun";

    /// <summary>UDP and TCP port for STUN (and later TURN), RFC 8489 §9's default 3478.</summary>
    public int Port { get; set; } = 3478;

    /// <summary>STUN over TLS port; used only when a certificate is configured (<c>Relay:Tls</c>).</summary>
    public int TlsPort { get; set; } = 5349;

    /// <summary>Addresses to listen on. Empty means every IPv4 and IPv6 address.</summary>
    public IList<string> ListenAddresses { get; } = [];

    /// <summary>
    /// RFC 5780 alternate IP address. When set, the server answers CHANGE-REQUEST and reports
    /// OTHER-ADDRESS; the first listen address of the same family is the primary.
    /// </summary>
    public string? AlternateAddress { get; set; }

    /// <summary>RFC 5780 alternate port; 0 means <see cref="Port"/> + 1.</summary>
    public int AlternatePort { get; set; }

    /// <summary>SOFTWARE attribute in responses; empty to omit (RFC 8489 §14.14).</summary>
    public string Software { get; set; } = "Relay";

    /// <summary>
    /// Largest STUN message accepted, header included. Above 1500 so that RFC 5780 PADDING probes of a
    /// full Ethernet MTU fit; bounded so a stream peer cannot make us buffer 64 KiB per connection.
    /// </summary>
    public int MaxMessageSize { get; set; } = 4096;

    /// <summary>Number of UDP receive loops per listen address (SO_REUSEPORT sockets); 0 means one per CPU.</summary>
    public int UdpReceiveLoops { get; set; }

    /// <summary>
    /// Datagrams moved per recvmmsg/sendmmsg call on Linux; 0 selects the portable async receive path.
    /// Memory per receive loop is about this many times (MaxMessageSize + response buffer).
    /// </summary>
    public int UdpBatchSize { get; set; } = 32;

    /// <summary>Per-source limits against reflection and amplification.</summary>
    public StunRateLimitOptions RateLimit { get; } = new();

    /// <summary>STUN over TCP/TLS connection limits.</summary>
    public StunTcpOptions Tcp { get; } = new();

    /// <summary>The resolved alternate port.</summary>
    public int EffectiveAlternatePort => AlternatePort == 0 ? Port + 1 : AlternatePort;
}

/// <summary><c>Relay:Stun:RateLimit</c>: a token bucket per source IP.</summary>
public sealed class StunRateLimitOptions
{
    /// <summary>On by default: an open STUN server is a reflector.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Sustained requests per second allowed from one IP address.</summary>
    public int RequestsPerSecond { get; set; } = 50;

    /// <summary>Bucket size: requests one IP can send in a burst.</summary>
    public int Burst { get; set; } = 100;

    /// <summary>Source addresses tracked at once; the least recently seen is evicted past this.</summary>
    public int MaxTrackedSources { get; set; } = 65536;
}

/// <summary><c>Relay:Stun:Tcp</c>.</summary>
public sealed class StunTcpOptions
{
    /// <summary>Concurrent STUN TCP/TLS connections from one IP address.</summary>
    public int MaxConnectionsPerIp { get; set; } = 64;

    /// <summary>A connection that completes no message for this long is closed (bytes of an unfinished one do not count).</summary>
    public int IdleTimeoutSeconds { get; set; } = 300;

    /// <summary>
    /// A message (STUN or ChannelData) must be complete this long after its first byte arrived, and the
    /// first message this long after the connection was accepted; otherwise the connection is closed
    /// (slowloris). 10 s is ample for a 4 KiB message on any link that can carry TURN.
    /// </summary>
    public int MessageTimeoutSeconds { get; set; } = 10;

    /// <summary>
    /// Open STUN/TURN TCP and TLS connections on the server, all addresses together; past it, new
    /// connections are closed at once (counted as <c>drops{reason="connection_cap"}</c>). Each holds a
    /// file descriptor: keep it below the process's limit (<c>ulimit -n</c>) minus relay sockets.
    /// </summary>
    public int MaxConnections { get; set; } = 10_000;
}
