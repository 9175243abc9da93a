using System.Net;
using Relay.DeviceClient.Nat;

namespace Relay.DeviceClient.Peers;

/// <summary>Which paths a peer channel may use.</summary>
public enum PeerPathPolicy
{
    /// <summary>Relay first, upgraded to direct when a connectivity check succeeds (the normal mode).</summary>
    Auto,

    /// <summary>Never leave the TURN relay (no direct checks).</summary>
    RelayOnly,

    /// <summary>No relay: the channel becomes usable only when a direct path is found.</summary>
    DirectOnly,
}

/// <summary>The path a <see cref="PeerChannel"/> currently sends on.</summary>
public enum PeerPath
{
    /// <summary>Through the TURN relay.</summary>
    Relayed,

    /// <summary>Straight to the peer's (possibly NATed) address.</summary>
    Direct,
}

/// <summary>Peer-to-peer sessions (docs/rendezvous.md): <see cref="RelayDeviceClient.ConnectPeerAsync"/>.</summary>
public sealed class PeerOptions
{
    /// <summary>Subscribe to <c>devices/{id}/rendezvous/in</c> and answer offers at all.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Decides whether an offer from a peer id is accepted; null accepts any peer the server introduces.</summary>
    public Func<string, bool>? AcceptFrom { get; set; }

    /// <summary>How often the chosen direct path is checked (keeps the NAT mapping; 3 unanswered checks drop it back to the relay).</summary>
    public TimeSpan KeepaliveInterval { get; set; } = TimeSpan.FromSeconds(25);

    /// <summary>How long connectivity checks run before the session settles on the relay.</summary>
    public TimeSpan CheckTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// While the channel is relayed after its checks ended (they failed, or a direct path was dropped), one more
    /// round of checks (one per candidate pair, no birthday probing) this often, so a path that comes back is used
    /// again. <see cref="TimeSpan.Zero"/> or <see cref="Timeout.InfiniteTimeSpan"/> turns re-checks off.
    /// </summary>
    public TimeSpan RecheckInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Birthday-paradox probing when exactly one side's NAT is symmetric.</summary>
    public bool BirthdayProbing { get; set; } = true;

    /// <summary>Extra sockets the symmetric side opens for birthday probing.</summary>
    public int BirthdayPorts { get; set; } = 256;

    /// <summary>Most probes the easy side sends to random ports of the symmetric side.</summary>
    public int BirthdayProbes { get; set; } = 2048;

    /// <summary>How long birthday probing lasts.</summary>
    public TimeSpan BirthdayWindow { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Gather a relayed (TURN) candidate.</summary>
    public bool UseTurn { get; set; } = true;

    /// <summary>Force the transport to the TURN server; null tries UDP, then TCP when UDP gets no answer.</summary>
    public TurnTransport? ForceTurnTransport { get; set; }

    /// <summary>Offer host candidates (the socket's local addresses); NAT lab tests turn them off.</summary>
    public bool UseHost { get; set; } = true;

    /// <summary>Which paths the channel may use.</summary>
    public PeerPathPolicy PathPolicy { get; set; } = PeerPathPolicy.Auto;

    /// <summary>
    /// Accept loopback candidates from the peer (and check them). Off by default: a hostile peer or server could
    /// otherwise aim this device's checks at its own loopback services. For peers on one machine (tests, a lab),
    /// together with <see cref="LocalAddress"/> = <see cref="IPAddress.Loopback"/>.
    /// </summary>
    public bool AllowLoopbackCandidates { get; set; }

    /// <summary>The local address the session sockets bind to; null binds to any.</summary>
    public IPAddress? LocalAddress { get; set; }

    /// <summary>
    /// The largest message <see cref="PeerChannel.SendAsync"/> accepts (one UDP datagram of at most this + 34 bytes:
    /// 8 of MQTT, 26 of sealing; 1,200 B gives 1,234 B, within IPv4's 1,280-byte safe size with its headers).
    /// </summary>
    public int MaxMessageSize { get; set; } = 1200;

    /// <summary>Messages buffered for <see cref="PeerChannel.ReceiveAsync"/>; when full, new ones are not acknowledged, so the sender retransmits.</summary>
    public int ReceiveQueueCapacity { get; set; } = 256;

    /// <summary>Sends of one message before <see cref="PeerChannel.SendAsync"/> throws <see cref="TimeoutException"/>.</summary>
    public int MaxSendAttempts { get; set; } = 8;

    /// <summary>The first retransmission timeout of a message (doubles per attempt, capped at 4 s); replaced by 2 × RTT once measured.</summary>
    public TimeSpan InitialRetransmitTimeout { get; set; } = TimeSpan.FromMilliseconds(300);

    /// <summary>How long gathering, the introduction and the relay set-up may take in <see cref="RelayDeviceClient.ConnectPeerAsync"/>.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>Retransmission of STUN and TURN requests to the server while gathering.</summary>
    public StunClientOptions ServerRetransmission { get; set; } = new() { InitialRto = TimeSpan.FromMilliseconds(250), MaxRequests = 5 };

    /// <summary>Run RFC 5780 NAT behavior discovery after connecting and report the result (<c>nat</c> message).</summary>
    public bool ReportNat { get; set; } = true;

    /// <summary>Test hook: behave as a runtime without ChaCha20-Poly1305 (seal and open AES-256-GCM only).</summary>
    internal bool AesGcmOnly { get; set; }
}
