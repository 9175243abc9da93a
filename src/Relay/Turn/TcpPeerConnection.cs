using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>A TCP connection between a TCP relay allocation and a peer (RFC 6062 §2).</summary>
internal sealed class TcpPeerConnection(uint id, TurnAllocation allocation, Socket peer, StunAddress peerAddress, long expiresAtMs)
{
    private int _bound;
    private int _closed;
    private int _paced;

    public uint Id { get; } = id;

    public TurnAllocation Allocation { get; } = allocation;

    public Socket Peer { get; } = peer;

    public StunAddress PeerAddress { get; } = peerAddress;

    /// <summary>When a connection nobody bound is given up (RFC 6062 §5.3: 30 seconds).</summary>
    public long ExpiresAtMs { get; } = expiresAtMs;

    public bool IsBound => Volatile.Read(ref _bound) != 0;

    /// <summary>True for the one ConnectionBind that gets this connection.</summary>
    public bool TryBind() => Interlocked.Exchange(ref _bound, 1) == 0;

    public bool TryClose() => Interlocked.Exchange(ref _closed, 1) == 0;

    /// <summary>True the first time the connection is paced by the bandwidth cap (so it is logged once).</summary>
    public bool TryMarkPaced() => Interlocked.Exchange(ref _paced, 1) == 0;
}
