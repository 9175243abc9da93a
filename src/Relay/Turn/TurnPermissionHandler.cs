using System.Buffers.Binary;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Server.Primitives;

namespace Relay.Server.Turn;

/// <summary>
/// CreatePermission (RFC 8656 §10) and ChannelBind (RFC 8656 §12), and the checks every peer address a
/// request names must pass (also for RFC 6062 Connect).
/// </summary>
internal sealed class TurnPermissionHandler
{
    private readonly TurnOptions _options;
    private readonly TurnPeerPolicy _peerPolicy;
    private readonly TurnResponseWriter _responses;
    private readonly TurnMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly TurnEventLog _events;

    public TurnPermissionHandler(TurnOptions options, TurnPeerPolicy peerPolicy, TurnResponseWriter responses, TurnMetrics metrics, TimeProvider time, TurnEventLog events)
    {
        _time = time;
        _options = options;
        _peerPolicy = peerPolicy;
        _responses = responses;
        _metrics = metrics;
        _events = events;
    }

    public int CreatePermission(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in TurnAuthentication auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null)
        {
            return _responses.Error(header, response, 437, "Allocation Mismatch"u8, auth);
        }

        // RFC 8656 §10.2: every XOR-PEER-ADDRESS must pass before any permission is installed.
        var peers = 0;
        foreach (var attribute in request)
        {
            if (attribute.Type != (ushort)StunAttributeType.XorPeerAddress)
            {
                continue;
            }

            StunAttributeReader.TryReadXorAddress(attribute.Value, header, out var peer);
            var refused = RefusePeer(peer, allocation, context, header, auth, response);
            if (refused > 0)
            {
                return refused;
            }

            peers++;
        }

        if (peers == 0)
        {
            return _responses.Error(header, response, 400, "XOR-PEER-ADDRESS missing"u8, auth);
        }

        var nowMs = _time.GetMonotonicMilliseconds();
        var expires = nowMs + (TurnLifetimes.PermissionSeconds * 1000L);
        foreach (var attribute in request)
        {
            if (attribute.Type == (ushort)StunAttributeType.XorPeerAddress)
            {
                StunAttributeReader.TryReadXorAddress(attribute.Value, header, out var peer);
                if (!allocation.TryInstallPermission(peer, expires, nowMs, _options.MaxPermissionsPerAllocation))
                {
                    _metrics.LimitHit(TurnLimit.Permissions);
                    _events.LimitHit(TurnLimit.Permissions, context.Client, allocation.Username, 508);
                    return _responses.Error(header, response, 508, "Insufficient Capacity"u8, auth);
                }
            }
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.CreatePermission, StunClass.SuccessResponse), header.TransactionId);
        return _responses.Finish(ref writer, auth, 200);
    }

    public int ChannelBind(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in TurnAuthentication auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null)
        {
            return _responses.Error(header, response, 437, "Allocation Mismatch"u8, auth);
        }

        if (allocation.IsTcpRelay)
        {
            // RFC 6062 §5: a TCP allocation carries data over its peer connections, never channels.
            return _responses.Error(header, response, 400, "Channels need a UDP allocation"u8, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.ChannelNumber, out var numberValue)
            || !request.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue))
        {
            return _responses.Error(header, response, 400, "CHANNEL-NUMBER or XOR-PEER-ADDRESS missing"u8, auth);
        }

        // RFC 8656 §12.2: numbers outside 0x4000-0x4FFF are 400 (0x7FFF with the RFC 5766 range on).
        var number = BinaryPrimitives.ReadUInt16BigEndian(numberValue);
        if (!(_options.AcceptRfc5766ChannelNumbers ? TurnChannel.IsValidRfc5766Number(number) : TurnChannel.IsValidNumber(number)))
        {
            return _responses.Error(header, response, 400, "Channel number out of range"u8, auth);
        }

        StunAttributeReader.TryReadXorAddress(peerValue, header, out var peer);
        var refused = RefusePeer(peer, allocation, context, header, auth, response);
        if (refused > 0)
        {
            return refused;
        }

        var nowMs = _time.GetMonotonicMilliseconds();
        switch (allocation.TryBindChannel(number, peer, nowMs + (TurnLifetimes.ChannelSeconds * 1000L), nowMs, _options.MaxChannelsPerAllocation))
        {
            case ChannelBindResult.Conflict:
                return _responses.Error(header, response, 400, "Channel or peer already bound"u8, auth);
            case ChannelBindResult.Full:
                _metrics.LimitHit(TurnLimit.Channels);
                _events.LimitHit(TurnLimit.Channels, context.Client, allocation.Username, 508);
                return _responses.Error(header, response, 508, "Insufficient Capacity"u8, auth);
        }

        // RFC 8656 §12.2: binding a channel also installs or refreshes the permission for the peer.
        if (!allocation.TryInstallPermission(peer, nowMs + (TurnLifetimes.PermissionSeconds * 1000L), nowMs, _options.MaxPermissionsPerAllocation))
        {
            _metrics.LimitHit(TurnLimit.Permissions);
            return _responses.Error(header, response, 508, "Insufficient Capacity"u8, auth);
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.ChannelBind, StunClass.SuccessResponse), header.TransactionId);
        return _responses.Finish(ref writer, auth, 200);
    }

    /// <summary>
    /// The checks every peer address in a request passes (CreatePermission, ChannelBind, Connect): a
    /// family the allocation relays (443, RFC 8656 §10.2/§12.2), and the peer policy (403). Returns the
    /// length of the error response written, or 0 when the peer is acceptable.
    /// </summary>
    public int RefusePeer(in StunAddress peer, TurnAllocation allocation, in TurnContext context, in StunHeader header, in TurnAuthentication auth, Span<byte> response)
    {
        if (!allocation.ServesFamily(peer.Family))
        {
            return _responses.Error(header, response, 443, "Peer Address Family Mismatch"u8, auth);
        }

        if (!_peerPolicy.IsAllowed(peer))
        {
            _metrics.Drop(TurnDropReason.PeerDenied);
            _events.PeerDenied(peer, context.Client);
            return _responses.Error(header, response, 403, "Forbidden"u8, auth);
        }

        return 0;
    }
}
