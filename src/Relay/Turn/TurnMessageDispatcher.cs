using System.Buffers;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>
/// Every STUN message but Binding that reaches the STUN/TURN port: parsed and checked, counted,
/// authenticated when it is a request (RFC 8656 §5), and handed to the handler of its method. Send
/// indications carry no credentials; they go to the data path.
/// </summary>
internal sealed class TurnMessageDispatcher
{
    private const int MaxUnknownReported = 16;

    // Comprehension-required attributes a TURN request may carry (RFC 8656 §18, RFC 8489 §14).
    private static readonly ushort[] Understood =
    [
        (ushort)StunAttributeType.Username, (ushort)StunAttributeType.MessageIntegrity, (ushort)StunAttributeType.MessageIntegritySha256,
        (ushort)StunAttributeType.Realm, (ushort)StunAttributeType.Nonce, (ushort)StunAttributeType.Userhash,
        (ushort)StunAttributeType.PasswordAlgorithm, (ushort)StunAttributeType.ErrorCode, (ushort)StunAttributeType.UnknownAttributes,
        (ushort)StunAttributeType.ChannelNumber, (ushort)StunAttributeType.Lifetime, (ushort)StunAttributeType.XorPeerAddress,
        (ushort)StunAttributeType.Data, (ushort)StunAttributeType.RequestedAddressFamily, (ushort)StunAttributeType.EvenPort,
        (ushort)StunAttributeType.RequestedTransport, (ushort)StunAttributeType.DontFragment, (ushort)StunAttributeType.ReservationToken,
        (ushort)StunAttributeType.XorMappedAddress, (ushort)StunAttributeType.Padding, (ushort)StunAttributeType.Priority,
        (ushort)StunAttributeType.UseCandidate, (ushort)StunAttributeType.ConnectionId,
    ];

    private readonly StunReaderLimits _limits;
    private readonly TurnAllocationTable<TurnAllocation, Socket> _allocations;
    private readonly TurnAuthenticator _authenticator;
    private readonly TurnResponseWriter _responses;
    private readonly TurnAllocateHandler _allocate;
    private readonly TurnRefreshHandler _refresh;
    private readonly TurnPermissionHandler _permissions;
    private readonly TurnTcpRequestHandler _tcp;
    private readonly TurnDataPath _dataPath;
    private readonly TurnMetrics _metrics;
    private readonly TurnEventLog _events;

    public TurnMessageDispatcher(
        StunReaderLimits limits,
        TurnAllocationTable<TurnAllocation, Socket> allocations,
        TurnAuthenticator authenticator,
        TurnResponseWriter responses,
        TurnAllocateHandler allocate,
        TurnRefreshHandler refresh,
        TurnPermissionHandler permissions,
        TurnTcpRequestHandler tcp,
        TurnDataPath dataPath,
        TurnMetrics metrics,
        TurnEventLog events)
    {
        _limits = limits;
        _allocations = allocations;
        _authenticator = authenticator;
        _responses = responses;
        _allocate = allocate;
        _refresh = refresh;
        _permissions = permissions;
        _tcp = tcp;
        _dataPath = dataPath;
        _metrics = metrics;
        _events = events;
    }

    /// <summary>
    /// Handles a TURN request or indication and writes the response into <paramref name="response"/>.
    /// Returns its length, or 0 when nothing is to be sent. A successful RFC 6062 ConnectionBind also
    /// hands back the peer connection this stream now carries, raw, after the response.
    /// </summary>
    public int Dispatch(ReadOnlySpan<byte> message, in TurnContext context, Span<byte> response, out TcpPeerConnection? boundPeer)
    {
        boundPeer = null;
        var status = StunMessageReader.TryParse(message, _limits, out var request, out var error);
        if (status != OperationStatus.Done)
        {
            if (status == OperationStatus.NeedMoreData || error.IsHeaderError())
            {
                _metrics.Drop(TurnDropReason.Malformed);
                return 0;
            }

            var header = StunHeader.Read(message);
            if (header.Class != StunClass.Request)
            {
                _metrics.Drop(TurnDropReason.Malformed);
                return 0;
            }

            return _responses.Error(header, response, 400, "Malformed attribute"u8);
        }

        var requestHeader = request.Header;
        if (request.HasFingerprint && !request.VerifyFingerprint())
        {
            // RFC 8489 §7.3: not STUN after all.
            _metrics.Drop(TurnDropReason.Malformed);
            return 0;
        }

        if (requestHeader.Class == StunClass.Indication)
        {
            if (requestHeader.Method == (ushort)StunMethod.Send)
            {
                _dataPath.HandleSend(request, context);
            }
            else
            {
                _metrics.Drop(TurnDropReason.Malformed);
            }

            return 0;
        }

        if (requestHeader.Class != StunClass.Request)
        {
            _metrics.Drop(TurnDropReason.Malformed);
            return 0;
        }

        var slot = requestHeader.Method switch
        {
            (ushort)StunMethod.Allocate => StunMethodSlot.Allocate,
            (ushort)StunMethod.Refresh => StunMethodSlot.Refresh,
            (ushort)StunMethod.CreatePermission => StunMethodSlot.CreatePermission,
            (ushort)StunMethod.ChannelBind => StunMethodSlot.ChannelBind,
            (ushort)StunMethod.Connect => StunMethodSlot.Connect,
            (ushort)StunMethod.ConnectionBind => StunMethodSlot.ConnectionBind,
            _ => StunMethodSlot.Other,
        };
        _metrics.Request(slot);
        if (slot == StunMethodSlot.Other)
        {
            return _responses.Error(requestHeader, response, 400, "Unsupported method"u8);
        }

        var allocation = _allocations.Find(context.FiveTuple);
        Span<byte> keyBuffer = stackalloc byte[32];
        var auth = _authenticator.Authenticate(request, context, allocation, keyBuffer, response, out var refused);
        if (!auth.Ok)
        {
            _events.Refused(MethodName(slot), context.Client, refused.Code);
            return refused.Length;
        }

        // RFC 8489 §6.3: unknown comprehension-required attributes are looked for "once the authentication
        // checks are done", so an unauthenticated request earns the 401 challenge, and the 420 carries
        // MESSAGE-INTEGRITY: RFC 8489 §9.2.5 has clients discard an unsigned answer to a signed request.
        Span<ushort> unknown = stackalloc ushort[MaxUnknownReported];
        var unknownCount = request.CollectUnknownComprehensionRequired(Understood, unknown);
        if (unknownCount > 0)
        {
            return _responses.UnknownAttributes(requestHeader, response, unknown[..unknownCount], auth);
        }

        return slot switch
        {
            StunMethodSlot.Allocate => _allocate.Allocate(request, context, allocation, auth, response),
            StunMethodSlot.Refresh => _refresh.Refresh(request, allocation, auth, response),
            StunMethodSlot.CreatePermission => _permissions.CreatePermission(request, context, allocation, auth, response),
            StunMethodSlot.Connect => _tcp.Connect(request, context, allocation, auth, response),
            StunMethodSlot.ConnectionBind => _tcp.ConnectionBind(request, context, allocation, auth, response, out boundPeer),
            _ => _permissions.ChannelBind(request, context, allocation, auth, response),
        };
    }

    private static string MethodName(StunMethodSlot slot) => slot switch
    {
        StunMethodSlot.Allocate => "Allocate",
        StunMethodSlot.Refresh => "Refresh",
        StunMethodSlot.CreatePermission => "CreatePermission",
        StunMethodSlot.ChannelBind => "ChannelBind",
        StunMethodSlot.Connect => "Connect",
        StunMethodSlot.ConnectionBind => "ConnectionBind",
        _ => "request",
    };
}
