using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;

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

/// <summary>RFC 6062: TCP relay allocations, Connect, ConnectionBind and ConnectionAttempt.</summary>
internal sealed partial class TurnRelay
{
    private const int TcpBindTimeoutMs = 30_000;
    private const int TcpConnectTimeoutMs = 30_000;
    private const int TcpListenBacklog = 16;

    private readonly ConcurrentDictionary<uint, TcpPeerConnection> _tcpConnections = new();

    /// <summary>A listening socket on a relay port; outgoing Connects bind the same address and port.</summary>
    private Socket? BindTcpRelayListener(IPAddress address)
    {
        for (var attempt = 0; attempt < 64; attempt++)
        {
            var port = Random.Shared.Next(_options.RelayPortMin, _options.RelayPortMax + 1);
            var socket = CreateTcpRelaySocket(address.AddressFamily);
            try
            {
                socket.Bind(new IPEndPoint(address, port));
                socket.Listen(TcpListenBacklog);
                return socket;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                if (e.SocketErrorCode != SocketError.AddressAlreadyInUse)
                {
                    LogRelayBindFailed(new IPEndPoint(address, port), e.SocketErrorCode);
                    return null;
                }
            }
        }

        return null;
    }

    private static Socket CreateTcpRelaySocket(AddressFamily family)
    {
        // RFC 6062 §5.2: connections to peers come from the relayed transport address, which the
        // listener holds; SO_REUSEADDR plus SO_REUSEPORT let both bind it.
        var socket = new Socket(family, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        socket.SetRawSocketOption(1, 15, [1, 0, 0, 0]);
        return socket;
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
            if (!allocation.HasPermission(peerAddress, Environment.TickCount64) || !TryRegisterTcpConnection(allocation, peer, peerAddress, out var connection))
            {
                Metrics.Drop(TurnDropReason.NoPermission);
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
                CloseTcpConnection(connection);
            }
        }
    }

    private bool TryRegisterTcpConnection(TurnAllocation allocation, Socket peer, StunAddress peerAddress, out TcpPeerConnection connection)
    {
        connection = null!;
        if (Interlocked.Increment(ref allocation.TcpConnectionCount) > _options.MaxPermissionsPerAllocation)
        {
            Interlocked.Decrement(ref allocation.TcpConnectionCount);
            Metrics.LimitHit(TurnLimit.TcpConnections);
            return false;
        }

        while (true)
        {
            var id = (uint)Random.Shared.Next(1, int.MaxValue);
            connection = new TcpPeerConnection(id, allocation, peer, peerAddress, Environment.TickCount64 + TcpBindTimeoutMs);
            if (_tcpConnections.TryAdd(id, connection))
            {
                return true;
            }
        }
    }

    private void CloseTcpConnection(TcpPeerConnection connection)
    {
        if (!connection.TryClose())
        {
            return;
        }

        _tcpConnections.TryRemove(new KeyValuePair<uint, TcpPeerConnection>(connection.Id, connection));
        Interlocked.Decrement(ref connection.Allocation.TcpConnectionCount);
        connection.Peer.Dispose();
    }

    /// <summary>Peer connections of a deleted allocation go with it; unbound ones expire after 30 s.</summary>
    private void SweepTcpConnections(long nowMs)
    {
        foreach (var (_, connection) in _tcpConnections)
        {
            if (connection.Allocation.IsClosed || (!connection.IsBound && connection.ExpiresAtMs <= nowMs))
            {
                CloseTcpConnection(connection);
            }
        }
    }

    /// <summary>
    /// RFC 6062 §5.2: the server connects from the relayed address to the peer, and answers with the new
    /// connection's CONNECTION-ID once that succeeds (447 when it does not). The connect runs in the
    /// background, so the control connection keeps serving Refresh and the rest meanwhile.
    /// </summary>
    private int Connect(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in Auth auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null || !allocation.IsTcpRelay)
        {
            return Error(header, response, allocation is null ? 437 : 400, allocation is null ? "Allocation Mismatch"u8 : "Not a TCP allocation"u8, default, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue))
        {
            return Error(header, response, 400, "XOR-PEER-ADDRESS missing"u8, default, auth);
        }

        StunAttributeReader.TryReadXorAddress(peerValue, header, out var peer);
        var refused = RefusePeer(peer, allocation, context, header, auth, response);
        if (refused > 0)
        {
            return refused;
        }

        // RFC 6062 §5.2: one connection per peer address.
        foreach (var (_, existing) in _tcpConnections)
        {
            if (existing.Allocation == allocation && existing.PeerAddress == peer)
            {
                return Error(header, response, 446, "Connection Already Exists"u8, default, auth);
            }
        }

        // RFC 6062 §5.2: connecting installs the permission, as sending would.
        var nowMs = Environment.TickCount64;
        if (!allocation.TryInstallPermission(peer, nowMs + (PermissionLifetimeSeconds * 1000L), nowMs, _options.MaxPermissionsPerAllocation))
        {
            Metrics.LimitHit(TurnLimit.Permissions);
            return Error(header, response, 508, "Insufficient Capacity"u8, default, auth);
        }

        _ = ConnectToPeerAsync(allocation, peer, header.TransactionId, auth.Sha256Integrity);
        return 0;
    }

    private async Task ConnectToPeerAsync(TurnAllocation allocation, StunAddress peer, StunTransactionId transaction, bool sha256Integrity)
    {
        var socket = CreateTcpRelaySocket(allocation.RelayFamily);
        TcpPeerConnection? connection = null;
        var code = 200;
        try
        {
            socket.Bind(allocation.RelaySocket.LocalEndPoint!);
            using var timeout = new CancellationTokenSource(TcpConnectTimeoutMs);
            await socket.ConnectAsync(peer.ToIPEndPoint(), timeout.Token).ConfigureAwait(false);
            if (!TryRegisterTcpConnection(allocation, socket, peer, out connection))
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

        var buffer = new byte[256];
        var length = WriteConnectResponse(buffer, allocation, transaction, sha256Integrity, code, connection?.Id ?? 0);
        if (allocation.Sink is not StreamClientSink control || !await control.SendAsync(buffer.AsMemory(0, length)).ConfigureAwait(false))
        {
            if (connection is not null)
            {
                CloseTcpConnection(connection);
            }
        }
    }

    private int WriteConnectResponse(Span<byte> buffer, TurnAllocation allocation, StunTransactionId transaction, bool sha256Integrity, int code, uint connectionId)
    {
        var auth = new Auth(allocation.Key, sha256Integrity, allocation.Algorithm, allocation.UsernameUtf8);
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Connect, code == 200 ? StunClass.SuccessResponse : StunClass.ErrorResponse), transaction);
        if (code == 200)
        {
            writer.WriteUInt32(StunAttributeType.ConnectionId, connectionId);
        }
        else
        {
            writer.WriteErrorCode(code, code == 447 ? "Connection Timeout or Failure"u8 : "Insufficient Capacity"u8);
        }

        return Finish(ref writer, auth, code);
    }

    /// <summary>
    /// RFC 6062 §5.4: a new client connection claims a peer connection by its CONNECTION-ID; after the
    /// success response the stream carries that peer's bytes, raw, in both directions.
    /// </summary>
    private int ConnectionBind(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in Auth auth, Span<byte> response, out TcpPeerConnection? bound)
    {
        bound = null;
        var header = request.Header;
        if (context.Transport == StunTransport.Udp || allocation is not null)
        {
            // The data connection is a fresh TCP connection of its own, never a control connection.
            return Error(header, response, 400, "ConnectionBind needs a new TCP connection"u8, default, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.ConnectionId, out var idValue)
            || !_tcpConnections.TryGetValue(BinaryPrimitives.ReadUInt32BigEndian(idValue), out var connection)
            || connection.Allocation.IsClosed)
        {
            return Error(header, response, 400, "Unknown CONNECTION-ID"u8, default, auth);
        }

        if (!auth.Username.SequenceEqual(connection.Allocation.UsernameUtf8))
        {
            return Error(header, response, 441, "Wrong Credentials"u8, default, auth);
        }

        if (!connection.TryBind())
        {
            return Error(header, response, 400, "Connection already bound"u8, default, auth);
        }

        bound = connection;
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.ConnectionBind, StunClass.SuccessResponse), header.TransactionId);
        return Finish(ref writer, auth, 200);
    }

    /// <summary>
    /// Copies bytes both ways between a bound client data connection and its peer until either side
    /// closes. Backpressure is TCP's own: a slow reader stops the copy, and its sender's window fills.
    /// </summary>
    public async Task RelayTcpDataAsync(TcpPeerConnection connection, System.IO.Pipelines.PipeReader fromClient, System.IO.Pipelines.PipeWriter toClient)
    {
        var toPeer = CopyClientToPeerAsync(connection, fromClient);
        var fromPeer = CopyPeerToClientAsync(connection, toClient);
        await Task.WhenAny(toPeer, fromPeer).ConfigureAwait(false);
        CloseTcpConnection(connection);
        await Task.WhenAll(toPeer, fromPeer).ConfigureAwait(false);
    }

    /// <summary>
    /// The per-allocation bandwidth cap (Relay:Turn:MaxBytesPerSecondPerAllocation) for RFC 6062 data, which
    /// shares the allocation's budget with its UDP traffic. A byte stream has nothing to drop, so a copy that
    /// has spent the budget waits for the next one-second window; meanwhile it does not read, and TCP's flow
    /// control slows the sender to the cap.
    /// </summary>
    private ValueTask PaceAsync(TcpPeerConnection connection, int bytes)
    {
        var cap = _options.MaxBytesPerSecondPerAllocation;
        var nowMs = Environment.TickCount64;
        if (cap <= 0 || connection.Allocation.TryConsumeBandwidth(bytes, nowMs, cap))
        {
            return ValueTask.CompletedTask;
        }

        Metrics.LimitHit(TurnLimit.TcpBandwidth);
        if (connection.TryMarkPaced())
        {
            LogTcpPaced(connection.PeerAddress.ToString(), cap);
        }

        return new ValueTask(Task.Delay(TimeSpan.FromMilliseconds(connection.Allocation.MillisecondsLeftInWindow(nowMs))));
    }

    [LoggerMessage(EventId = 4030, Level = LogLevel.Information, Message = "TURN TCP relay to {Peer}: paced to {Cap} B/s (Relay:Turn:MaxBytesPerSecondPerAllocation); logged once per connection")]
    private partial void LogTcpPaced(string peer, long cap);

    private async Task CopyClientToPeerAsync(TcpPeerConnection connection, System.IO.Pipelines.PipeReader fromClient)
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
                    Metrics.Relayed(toPeer: true, segment.Length);
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

    private async Task CopyPeerToClientAsync(TcpPeerConnection connection, System.IO.Pipelines.PipeWriter toClient)
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
                Metrics.Relayed(toPeer: false, received);
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
