using System.Buffers.Binary;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.Primitives;

namespace Relay.Server.Turn;

/// <summary>
/// The RFC 6062 requests: Connect on a TCP allocation's control connection, and ConnectionBind on a new
/// data connection. The peer connections themselves are <see cref="TurnTcpRelay"/>'s.
/// </summary>
internal sealed class TurnTcpRequestHandler
{
    private readonly TurnOptions _options;
    private readonly TurnTcpRelay _tcp;
    private readonly TurnPermissionHandler _permissions;
    private readonly TurnResponseWriter _responses;
    private readonly TurnMetrics _metrics;
    private readonly TimeProvider _time;

    public TurnTcpRequestHandler(TurnOptions options, TurnTcpRelay tcp, TurnPermissionHandler permissions, TurnResponseWriter responses, TurnMetrics metrics, TimeProvider time)
    {
        _time = time;
        _options = options;
        _tcp = tcp;
        _permissions = permissions;
        _responses = responses;
        _metrics = metrics;
    }

    /// <summary>
    /// RFC 6062 §5.2: the server connects from the relayed address to the peer, and answers with the new
    /// connection's CONNECTION-ID once that succeeds (447 when it does not). The connect runs in the
    /// background, so the control connection keeps serving Refresh and the rest meanwhile; returns 0 then.
    /// </summary>
    public int Connect(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in TurnAuthentication auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null || !allocation.IsTcpRelay)
        {
            return _responses.Error(header, response, allocation is null ? 437 : 400, allocation is null ? "Allocation Mismatch"u8 : "Not a TCP allocation"u8, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue))
        {
            return _responses.Error(header, response, 400, "XOR-PEER-ADDRESS missing"u8, auth);
        }

        StunAttributeReader.TryReadXorAddress(peerValue, header, out var peer);
        var refused = _permissions.RefusePeer(peer, allocation, context, header, auth, response);
        if (refused > 0)
        {
            return refused;
        }

        // RFC 6062 §5.2: one connection per peer address.
        if (_tcp.HasConnection(allocation, peer))
        {
            return _responses.Error(header, response, 446, "Connection Already Exists"u8, auth);
        }

        // RFC 6062 §5.2: connecting installs the permission, as sending would.
        var nowMs = _time.GetMonotonicMilliseconds();
        if (!allocation.TryInstallPermission(peer, nowMs + (TurnLifetimes.PermissionSeconds * 1000L), nowMs, _options.MaxPermissionsPerAllocation))
        {
            _metrics.LimitHit(TurnLimit.Permissions);
            return _responses.Error(header, response, 508, "Insufficient Capacity"u8, auth);
        }

        _ = ConnectAndAnswerAsync(allocation, peer, header.TransactionId, auth.Sha256Integrity);
        return 0;
    }

    /// <summary>
    /// RFC 6062 §5.4: a new client connection claims a peer connection by its CONNECTION-ID; after the
    /// success response the stream carries that peer's bytes, raw, in both directions.
    /// </summary>
    public int ConnectionBind(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in TurnAuthentication auth, Span<byte> response, out TcpPeerConnection? bound)
    {
        bound = null;
        var header = request.Header;
        if (context.Transport == StunTransport.Udp || allocation is not null)
        {
            // The data connection is a fresh TCP connection of its own, never a control connection.
            return _responses.Error(header, response, 400, "ConnectionBind needs a new TCP connection"u8, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.ConnectionId, out var idValue)
            || _tcp.Find(BinaryPrimitives.ReadUInt32BigEndian(idValue)) is not { } connection
            || connection.Allocation.IsClosed)
        {
            return _responses.Error(header, response, 400, "Unknown CONNECTION-ID"u8, auth);
        }

        if (!auth.Username.SequenceEqual(connection.Allocation.UsernameUtf8))
        {
            return _responses.Error(header, response, 441, "Wrong Credentials"u8, auth);
        }

        if (!connection.TryBind())
        {
            return _responses.Error(header, response, 400, "Connection already bound"u8, auth);
        }

        bound = connection;
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.ConnectionBind, StunClass.SuccessResponse), header.TransactionId);
        return _responses.Finish(ref writer, auth, 200);
    }

    /// <summary>Connects, then answers the Connect on the control connection; a connection the client cannot hear of is closed.</summary>
    private async Task ConnectAndAnswerAsync(TurnAllocation allocation, StunAddress peer, StunTransactionId transaction, bool sha256Integrity)
    {
        var (code, connection) = await _tcp.ConnectAsync(allocation, peer).ConfigureAwait(false);
        var buffer = new byte[256];
        var length = WriteConnectResponse(buffer, allocation, transaction, sha256Integrity, code, connection?.Id ?? 0);
        if (allocation.Sink is not StreamClientSink control || !await control.SendAsync(buffer.AsMemory(0, length)).ConfigureAwait(false))
        {
            if (connection is not null)
            {
                _tcp.Close(connection);
            }
        }
    }

    /// <summary>The Connect response, signed with the allocation's key in the integrity the request used.</summary>
    private int WriteConnectResponse(Span<byte> buffer, TurnAllocation allocation, StunTransactionId transaction, bool sha256Integrity, int code, uint connectionId)
    {
        var auth = new TurnAuthentication(allocation.Key, sha256Integrity, allocation.Algorithm, allocation.UsernameUtf8);
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Connect, code == 200 ? StunClass.SuccessResponse : StunClass.ErrorResponse), transaction);
        if (code == 200)
        {
            writer.WriteUInt32(StunAttributeType.ConnectionId, connectionId);
        }
        else
        {
            writer.WriteErrorCode(code, code == 447 ? "Connection Timeout or Failure"u8 : "Insufficient Capacity"u8);
        }

        return _responses.Finish(ref writer, auth, code);
    }
}
