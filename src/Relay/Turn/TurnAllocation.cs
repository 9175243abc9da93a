using System.Net.Sockets;
using System.Runtime.InteropServices;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;

namespace Relay.Server.Turn;

/// <summary>
/// The 5-tuple that names an allocation (RFC 8656 §2): client address, server address, transport.
/// A struct key, compared by value, so table lookups never build strings.
/// </summary>
internal readonly record struct TurnFiveTuple(StunAddress Client, StunAddress Server, StunTransport Transport);

/// <summary>A permission (RFC 8656 §9): the peer's IP address, any port, until it expires.</summary>
internal readonly record struct TurnPermission(StunAddress Host, long ExpiresAtMs);

/// <summary>A channel binding (RFC 8656 §12): number to peer transport address, until it expires.</summary>
internal readonly record struct TurnChannelBinding(ushort Number, StunAddress Peer, long ExpiresAtMs);

/// <summary>
/// One allocation (RFC 8656 §2.2): a relay socket and the client's permissions and channels.
/// Requests mutate it under a lock by replacing small arrays; the relay paths read those arrays without
/// locking, because a reference read is atomic and the arrays are never modified once published.
/// </summary>
internal sealed class TurnAllocation : ITurnAllocationEntry
{
    // RFC 8656 §12: an expired channel number and peer stay unusable for 5 more minutes.
    private const long ChannelQuarantineMs = 300_000;

    private readonly object _gate = new();
    private TurnPermission[] _permissions = [];
    private TurnChannelBinding[] _channels = [];
    private long _expiresAtMs;
    private long _windowStartMs;
    private long _windowBytes;
    private int _tcpConnections;
    private int _closed;

    public TurnAllocation(TurnFiveTuple fiveTuple, string username, byte[] key, StunPasswordAlgorithm algorithm, Socket relaySocket, StunAddress relayedAddress, TurnClientSink sink, StunTransactionId allocateTransaction, Socket? secondarySocket = null, StunAddress secondaryRelayedAddress = default)
    {
        SecondarySocket = secondarySocket;
        SecondaryRelayedAddress = secondaryRelayedAddress;
        FiveTuple = fiveTuple;
        Username = username;
        UsernameUtf8 = System.Text.Encoding.UTF8.GetBytes(username);
        Key = key;
        Algorithm = algorithm;
        RelaySocket = relaySocket;
        RelayedAddress = relayedAddress;
        RelayFamily = relaySocket.AddressFamily;
        IsTcpRelay = relaySocket.SocketType == SocketType.Stream;
        Sink = sink;
        AllocateTransaction = allocateTransaction;
    }

    public TurnFiveTuple FiveTuple { get; }

    public string Username { get; }

    public byte[] UsernameUtf8 { get; }

    /// <summary>The long-term key the Allocate was authenticated with; every later request must use it too (RFC 8656 §5).</summary>
    public byte[] Key { get; }

    public StunPasswordAlgorithm Algorithm { get; }

    public Socket RelaySocket { get; }

    public AddressFamily RelayFamily { get; }

    /// <summary>An RFC 6062 allocation: <see cref="RelaySocket"/> is a TCP listener, and data flows over per-peer TCP connections.</summary>
    public bool IsTcpRelay { get; }

    /// <summary>The address advertised in XOR-RELAYED-ADDRESS (the external address when one is configured).</summary>
    public StunAddress RelayedAddress { get; }

    /// <summary>The IPv6 relay socket of a dual allocation (RFC 8656 §7.2, ADDITIONAL-ADDRESS-FAMILY).</summary>
    public Socket? SecondarySocket { get; }

    public StunAddress SecondaryRelayedAddress { get; }

    /// <summary>True when the allocation has a relayed address of <paramref name="family"/>; otherwise 443 (RFC 8656 §10.2, §12.2).</summary>
    public bool ServesFamily(AddressFamily family) => RelayFamily == family || (SecondarySocket is { } secondary && secondary.AddressFamily == family);

    /// <summary>The relay socket that talks to peers of <paramref name="family"/>.</summary>
    public Socket SocketFor(AddressFamily family) => RelayFamily == family || SecondarySocket is null ? RelaySocket : SecondarySocket;

    public TurnClientSink Sink { get; }

    /// <summary>So a retransmitted Allocate gets the same success instead of 437 (RFC 8656 §7.2).</summary>
    public StunTransactionId AllocateTransaction { get; }

    /// <summary>Registrations with the relay I/O loop: one per relay socket.</summary>
    public GCHandle LoopHandle { get; set; }

    public GCHandle SecondaryLoopHandle { get; set; }

    public RelayIoLoop? Loop { get; set; }

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    public long ExpiresAtMs => Volatile.Read(ref _expiresAtMs);

    public int PermissionCount => _permissions.Length;

    public int ChannelCount => _channels.Length;

    /// <summary>Marks the allocation closed; true for the one caller that gets to release it.</summary>
    public bool TryClose() => Interlocked.Exchange(ref _closed, 1) == 0;

    /// <summary>Counts one more peer TCP connection of an RFC 6062 allocation (bound or waiting for a ConnectionBind); false at <paramref name="max"/>.</summary>
    public bool TryAddTcpConnection(int max)
    {
        if (Interlocked.Increment(ref _tcpConnections) > max)
        {
            Interlocked.Decrement(ref _tcpConnections);
            return false;
        }

        return true;
    }

    /// <summary>A peer TCP connection counted by <see cref="TryAddTcpConnection"/> closed.</summary>
    public void RemoveTcpConnection() => Interlocked.Decrement(ref _tcpConnections);

    public void SetLifetime(long nowMs, int seconds) => Volatile.Write(ref _expiresAtMs, nowMs + (seconds * 1000L));

    /// <summary>RFC 8656 §9: a permission matches on IP address only, never on port.</summary>
    public bool HasPermission(in StunAddress peer, long nowMs)
    {
        foreach (var permission in _permissions)
        {
            if (permission.Host.SameHost(peer) && permission.ExpiresAtMs > nowMs)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Installs or refreshes a permission; false when the allocation holds <paramref name="max"/> live ones already.</summary>
    public bool TryInstallPermission(in StunAddress peer, long expiresAtMs, long nowMs, int max)
    {
        lock (_gate)
        {
            var current = _permissions;
            for (var i = 0; i < current.Length; i++)
            {
                if (current[i].Host.SameHost(peer))
                {
                    var copy = (TurnPermission[])current.Clone();
                    copy[i] = copy[i] with { ExpiresAtMs = expiresAtMs };
                    Volatile.Write(ref _permissions, copy);
                    return true;
                }
            }

            var live = current.Where(p => p.ExpiresAtMs > nowMs).ToList();
            if (live.Count >= max)
            {
                return false;
            }

            live.Add(new TurnPermission(peer.WithPort(0), expiresAtMs));
            Volatile.Write(ref _permissions, live.ToArray());
            return true;
        }
    }

    /// <summary>Client to peer: the peer bound to <paramref name="number"/>, if the binding is live.</summary>
    public bool TryGetChannelPeer(ushort number, long nowMs, out StunAddress peer)
    {
        foreach (var channel in _channels)
        {
            if (channel.Number == number && channel.ExpiresAtMs > nowMs)
            {
                peer = channel.Peer;
                return true;
            }
        }

        peer = default;
        return false;
    }

    /// <summary>Peer to client: the channel bound to <paramref name="peer"/> (address and port), or 0.</summary>
    public ushort FindChannel(in StunAddress peer, long nowMs)
    {
        foreach (var channel in _channels)
        {
            if (channel.Peer == peer && channel.ExpiresAtMs > nowMs)
            {
                return channel.Number;
            }
        }

        return 0;
    }

    /// <summary>
    /// RFC 8656 §12.2: a channel number stays bound to one peer and a peer to one channel for the
    /// binding's life; rebinding the same pair refreshes it.
    /// </summary>
    public ChannelBindResult TryBindChannel(ushort number, in StunAddress peer, long expiresAtMs, long nowMs, int max)
    {
        lock (_gate)
        {
            var current = _channels;
            for (var i = 0; i < current.Length; i++)
            {
                var channel = current[i];
                var samePeer = channel.Peer == peer;
                var sameNumber = channel.Number == number;
                if (samePeer && sameNumber)
                {
                    var copy = (TurnChannelBinding[])current.Clone();
                    copy[i] = channel with { ExpiresAtMs = expiresAtMs };
                    Volatile.Write(ref _channels, copy);
                    return ChannelBindResult.Bound;
                }

                // An expired binding still blocks reuse (RFC 8656 §12: 5 more minutes), which keeps
                // stray packets of the old binding from reaching a new peer; the sweep frees it later.
                if (samePeer || sameNumber)
                {
                    return ChannelBindResult.Conflict;
                }
            }

            if (current.Length >= max)
            {
                return ChannelBindResult.Full;
            }

            Volatile.Write(ref _channels, [.. current, new TurnChannelBinding(number, peer, expiresAtMs)]);
            return ChannelBindResult.Bound;
        }
    }

    /// <summary>Drops expired permissions, and channels expired for longer than their quarantine (RFC 8656 §12).</summary>
    public void Sweep(long nowMs)
    {
        // Runs every second for every allocation: look before taking the lock or allocating.
        var stale = false;
        foreach (var permission in _permissions)
        {
            stale |= permission.ExpiresAtMs <= nowMs;
        }

        foreach (var channel in _channels)
        {
            stale |= channel.ExpiresAtMs + ChannelQuarantineMs <= nowMs;
        }

        if (!stale)
        {
            return;
        }

        lock (_gate)
        {
            Volatile.Write(ref _permissions, _permissions.Where(p => p.ExpiresAtMs > nowMs).ToArray());
            Volatile.Write(ref _channels, _channels.Where(c => c.ExpiresAtMs + ChannelQuarantineMs > nowMs).ToArray());
        }
    }

    /// <summary>Milliseconds until the current one-second bandwidth window ends (at least 1).</summary>
    public long MillisecondsLeftInWindow(long nowMs) => Math.Clamp(1000 - (nowMs - Volatile.Read(ref _windowStartMs)), 1, 1000);

    /// <summary>
    /// Bandwidth cap for both directions together, in one-second windows. Approximate under races
    /// between the two directions' threads, which only ever lets a few packets more through.
    /// </summary>
    public bool TryConsumeBandwidth(int bytes, long nowMs, long bytesPerSecond)
    {
        if (bytesPerSecond <= 0)
        {
            return true;
        }

        var start = Volatile.Read(ref _windowStartMs);
        if (nowMs - start >= 1000)
        {
            Volatile.Write(ref _windowStartMs, nowMs);
            Volatile.Write(ref _windowBytes, 0);
        }

        return Interlocked.Add(ref _windowBytes, bytes) <= bytesPerSecond;
    }
}

internal enum ChannelBindResult : byte
{
    Bound,
    Conflict,
    Full,
}
