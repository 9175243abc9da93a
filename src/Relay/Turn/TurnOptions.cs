namespace Relay.Server.Turn;

/// <summary>
/// <c>Relay:Turn</c>: the TURN relay (RFC 8656) on the STUN ports. Key names are a contract with
/// operators' scripts: rename nothing without an alias.
/// </summary>
public sealed class TurnOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Turn";

    /// <summary>TURN on the STUN ports; off leaves a STUN-only server.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>REALM for the long-term credential mechanism (RFC 8489 §9.2).</summary>
    public string Realm { get; set; } = "relay";

    /// <summary>Static <c>user:password</c> entries, for tests and small setups.</summary>
    public IList<string> Users { get; } = [];

    /// <summary>
    /// Shared secrets for time-limited credentials (draft-uberti-behave-turn-rest-00): username
    /// <c>expiry:user</c>, password <c>base64(HMAC-SHA1(secret, username))</c>. Several may be active
    /// at once so that secrets can rotate; the first one mints new credentials.
    /// </summary>
    public IList<string> SharedSecrets { get; } = [];

    /// <summary>
    /// Explicit opt-in for loopback peers (127.0.0.0/8, ::1), for tests and local demos. Off by default:
    /// a loopback peer reaches the server's own services (coturn CVE-2020-26262).
    /// </summary>
    public bool AllowLoopbackPeers { get; set; }

    /// <summary>CIDR ranges that peers may be in even when a default deny range covers them.</summary>
    public IList<string> AllowedPeers { get; } = [];

    /// <summary>CIDR ranges denied in addition to the defaults; a deny here beats an allow.</summary>
    public IList<string> DeniedPeers { get; } = [];

    /// <summary>
    /// Addresses relayed transport addresses are bound to, at most one IPv4 and one IPv6. Empty: the
    /// STUN listen address of each family when it is specific, otherwise the host's first usable one.
    /// </summary>
    public IList<string> RelayAddresses { get; } = [];

    /// <summary>
    /// Public address to advertise in XOR-RELAYED-ADDRESS when the server sits behind a 1:1 NAT
    /// (cloud VMs); relay ports are the same on both sides.
    /// </summary>
    public string? ExternalAddress { get; set; }

    /// <summary>
    /// Accept channel numbers 0x5000-0x7FFF (RFC 5766's range, reserved by RFC 8656 §12) in ChannelBind
    /// and ChannelData. On by default: coturn's turnutils_uclient and old libjingle clients bind them.
    /// </summary>
    public bool AcceptRfc5766ChannelNumbers { get; set; } = true;

    /// <summary>Lowest relay port (RFC 8656 §7.2 suggests 49152-65535).</summary>
    public int RelayPortMin { get; set; } = 49152;

    /// <summary>Highest relay port.</summary>
    public int RelayPortMax { get; set; } = 65535;

    /// <summary>Allocation lifetime when the client asks for none (RFC 8656 §3.2: 600 s).</summary>
    public int DefaultLifetimeSeconds { get; set; } = 600;

    /// <summary>Longest allocation lifetime granted; requests for more are capped.</summary>
    public int MaxLifetimeSeconds { get; set; } = 3600;

    /// <summary>How long a NONCE stays valid before a request with it earns 438 Stale Nonce.</summary>
    public int NonceLifetimeSeconds { get; set; } = 600;

    /// <summary>
    /// Concurrent allocations one user may hold (486 past it). The user of a REST username
    /// (<c>expiry:user</c>) is the part after the first ':', so every credential minted for one device
    /// counts against one quota.
    /// </summary>
    public int MaxAllocationsPerUser { get; set; } = 64;

    /// <summary>
    /// Concurrent allocations one client address (IPv4, or IPv6 /64) may hold, whatever usernames it
    /// presents (486 past it): a device with many credentials cannot take every relay port. coturn
    /// (4.6) has no such cap, only user and total quotas.
    /// </summary>
    public int MaxAllocationsPerIp { get; set; } = 64;

    /// <summary>Concurrent allocations on the server (486 past it); each holds one relay socket.</summary>
    public int MaxAllocations { get; set; } = 16384;

    /// <summary>Permissions one allocation may hold (RFC 8656 §9 leaves the bound to the server).</summary>
    public int MaxPermissionsPerAllocation { get; set; } = 64;

    /// <summary>Channels one allocation may bind.</summary>
    public int MaxChannelsPerAllocation { get; set; } = 64;

    /// <summary>
    /// Relayed bytes per second per allocation, each direction counted together; excess UDP is dropped
    /// and counted. 0 turns the cap off.
    /// </summary>
    public long MaxBytesPerSecondPerAllocation { get; set; } = 12_500_000;
}
