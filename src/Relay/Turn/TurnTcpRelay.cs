using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Server.Primitives;

namespace Relay.Server.Turn;

/// <summary>
/// The peer side of RFC 6062 TCP relay allocations. Owns the peer connections by CONNECTION-ID: accepts
/// peers on an allocation's listener and announces them (ConnectionAttempt), connects to peers for a
/// Connect, and, once a client data connection is bound, copies bytes both ways, paced by the
/// allocation's bandwidth cap. Connections nobody binds within 30 s, and those of deleted allocations,
/// are closed by <see cref="Sweep"/>.
/// </summary>
internal sealed class TurnTcpRelay
{
    private const int BindTimeoutMs = 30_000;
    private const int ConnectTimeoutMs = 30_000;

    private readonly ConcurrentDictionary<uint, TcpPeerConnection> _connections = new();
    private readonly TurnMetrics _metrics;
    private readonly TurnEventLog _events;
    private readonly int _maxConnectionsPerAllocation;
    private readonly long _bytesPerSecond;
    private readonly TimeProvider _time;

    public TurnTcpRelay(TurnOptions options, TurnMetrics metrics, TimeProvider time, TurnEventLog events)
    {
        _time = time;
        _metrics = metrics;
        _events = events;

        // Relay:Turn:MaxPermissionsPerAllocation bounds an allocation's peer connections too.
        _maxConnectionsPerAllocation = options.MaxPermissionsPerAllocation;
        _bytesPerSecond = options.MaxBytesPerSecondPerAllocation;
    }

    /// <summary>Starts accepting peers on a new TCP allocation's listener, until the allocation closes.</summary>
    public void StartAccepting(TurnAllocation allocation) => _ = AcceptPeersAsync(allocation);

    /// <summary>RFC 6062 §5.2: one connection per peer address.</summary>
    public bool HasConnection(TurnAllocation allocation, in StunAddress peer)
    {
        foreach (var (_, existing) in _connections)
        {
            if (existing.Allocation == allocation && existing.PeerAddress == peer)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The peer connection a CONNECTION-ID names, if it is still open.</summary>
    public TcpPeerConnection? Find(uint id) => _connections.TryGetValue(id, out var connection) ? connection : null;

    /// <summary>
    /// RFC 6062 §5.2: connects from the allocation's relayed transport address to <paramref name="peer"/>.
    /// Returns 200 and the new connection, 447 when the connect failed or timed out, or 508 when the
    /// allocation holds as many connections as it may.
    /// </summary>
    public async Task<(int Code, TcpPeerConnection? Connection)> ConnectAsync(TurnAllocation allocation, StunAddress peer)
    {
        var socket = RelayPortBinder.CreateTcpRelaySocket(allocation.RelayFamily);
        TcpPeerConnection? connection = null;
        var code = 200;
        try
        {
            socket.Bind(allocation.RelaySocket.LocalEndPoint!);
            using var timeout = new CancellationTokenSource(ConnectTimeoutMs);
            await socket.ConnectAsync(peer.ToIPEndPoint(), timeout.Token).ConfigureAwait(false);
            if (!TryRegister(allocation, socket, peer, out connection))
            {
                code = 508;
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
            code = 447;
        }

        if (code != 200)
        {
            socket.Dispose();
        }

        return (code, connection);
    }

    public void Close(TcpPeerConnection connection)
    {
        if (!connection.TryClose())
        {
            return;
        }

        _connections.TryRemove(new KeyValuePair<uint, TcpPeerConnection>(connection.Id, connection));
        connection.Allocation.RemoveTcpConnection();
        connection.Peer.Dispose();
    }

    /// <summary>Peer connections of a deleted allocation go with it; unbound ones expire after 30 s.</summary>
    public void Sweep(long nowMs)
    {
        foreach (var (_, connection) in _connections)
        {
            if (connection.Allocation.IsClosed || (!connection.IsBound && connection.ExpiresAtMs <= nowMs))
            {
                Close(connection);
            }
        }
    }

    /// <summary>
    /// Copies bytes both ways between a bound client data connection and its peer until either side
    /// closes. Backpressure is TCP's own: a slow reader stops the copy, and its sender's window fills.
    /// </summary>
    public async Task RelayAsync(TcpPeerConnection connection, PipeReader fromClient, PipeWriter toClient)
    {
        var toPeer = CopyClientToPeerAsync(connection, fromClient);
        var fromPeer = CopyPeerToClientAsync(connection, toClient);
        await Task.WhenAny(toPeer, fromPeer).ConfigureAwait(false);
        Close(connection);
        await Task.WhenAll(toPeer, fromPeer).ConfigureAwait(false);
    }

    /// <summary>
    /// RFC 6062 §5.3: a peer that connects to the relayed address is accepted when it has a permission,
    /// and the client learns of it through a ConnectionAttempt indication on its control connection.
    /// </summary>
    private async Task AcceptPeersAsync(TurnAllocation allocation)
    {
        while (!allocation.IsClosed)
        {
            Socket peer;
            try
            {
                peer = await allocation.RelaySocket.AcceptAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            var peerAddress = StunAddress.FromEndPoint((IPEndPoint)peer.RemoteEndPoint!);
            if (!allocation.HasPermission(peerAddress, _time.GetMonotonicMilliseconds()) || !TryRegister(allocation, peer, peerAddress, out var connection))
            {
                _metrics.Drop(TurnDropReason.NoPermission);
                peer.Dispose();
                continue;
            }

            var indication = new byte[64];
            var writer = new StunMessageWriter(indication, StunHeader.ComposeType(StunMethod.ConnectionAttempt, StunClass.Indication), StunTransactionId.NewRandom());
            writer.WriteUInt32(StunAttributeType.ConnectionId, connection.Id);
            writer.WriteXorAddress(StunAttributeType.XorPeerAddress, peerAddress);
            writer.WriteFingerprint();
            if (allocation.Sink is StreamClientSink control && !await control.SendAsync(indication.AsMemory(0, writer.Length)).ConfigureAwait(false))
            {
                Close(connection);
            }
        }
    }

    private bool TryRegister(TurnAllocation allocation, Socket peer, StunAddress peerAddress, [NotNullWhen(true)] out TcpPeerConnection? connection)
    {
        connection = null;
        if (!allocation.TryAddTcpConnection(_maxConnectionsPerAllocation))
        {
            _metrics.LimitHit(TurnLimit.TcpConnections);
            return false;
        }

        while (true)
        {
            var id = (uint)Random.Shared.Next(1, int.MaxValue);
            connection = new TcpPeerConnection(id, allocation, peer, peerAddress, _time.GetMonotonicMilliseconds() + BindTimeoutMs);
            if (_connections.TryAdd(id, connection))
            {
                return true;
            }
        }
    }

    /// <summary>
    /// The per-allocation bandwidth cap (Relay:Turn:MaxBytesPerSecondPerAllocation) for RFC 6062 data, which
    /// shares the allocation's budget with its UDP traffic. A byte stream has nothing to drop, so a copy that
    /// has spent the budget waits for the next one-second window; meanwhile it does not read, and TCP's flow
    /// control slows the sender to the cap.
    /// </summary>
    private ValueTask PaceAsync(TcpPeerConnection connection, int bytes)
    {
        var cap = _bytesPerSecond;
        var nowMs = _time.GetMonotonicMilliseconds();
        if (cap <= 0 || connection.Allocation.TryConsumeBandwidth(bytes, nowMs, cap))
        {
            return ValueTask.CompletedTask;
        }

        _metrics.LimitHit(TurnLimit.TcpBandwidth);
        if (connection.TryMarkPaced())
        {
            _events.TcpPaced(connection.PeerAddress, cap);
        }

        return new ValueTask(Task.Delay(TimeSpan.FromMilliseconds(connection.Allocation.MillisecondsLeftInWindow(nowMs)), _time));
    }

    private async Task CopyClientToPeerAsync(TcpPeerConnection connection, PipeReader fromClient)
    {
        try
        {
            while (true)
            {
                var result = await fromClient.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                foreach (var segment in buffer)
                {
                    await connection.Peer.SendAsync(segment, SocketFlags.None).ConfigureAwait(false);
                    _metrics.Relayed(toPeer: true, segment.Length);
                    await PaceAsync(connection, segment.Length).ConfigureAwait(false);
                }

                fromClient.AdvanceTo(buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                {
                    connection.Peer.Shutdown(SocketShutdown.Send);
                    return;
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or InvalidOperationException)
        {
        }
    }

    private async Task CopyPeerToClientAsync(TcpPeerConnection connection, PipeWriter toClient)
    {
        try
        {
            while (true)
            {
                var memory = toClient.GetMemory(8192);
                var received = await connection.Peer.ReceiveAsync(memory, SocketFlags.None).ConfigureAwait(false);
                if (received == 0)
                {
                    return;
                }

                toClient.Advance(received);
                _metrics.Relayed(toPeer: false, received);
                await PaceAsync(connection, received).ConfigureAwait(false);
                var flush = await toClient.FlushAsync().ConfigureAwait(false);
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    return;
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException or InvalidOperationException)
        {
        }
    }
}
