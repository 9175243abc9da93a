using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.Primitives;

namespace Relay.Server.Turn;

/// <summary>
/// Allocate (RFC 8656 §7.2; RFC 6062 §5.1 for TCP relays): checks the request's attributes, takes the
/// quota, binds the relay socket(s) or redeems a reservation, and hands the new allocation to a relay
/// loop or, for a TCP relay, to <see cref="TurnTcpRelay"/>.
/// </summary>
internal sealed class TurnAllocateHandler
{
    private const byte RequestedTransportTcp = 6;
    private const byte RequestedTransportUdp = 17;
    private const ushort LegacyAdditionalAddressFamily = 0x8032;
    private const ushort LegacyAddressErrorCode = 0x8033;

    private readonly TurnOptions _options;
    private readonly TurnAllocationTable<TurnAllocation, Socket> _allocations;
    private readonly RelayPortBinder _binder;
    private readonly RelayIoLoopGroup _loops;
    private readonly TurnTcpRelay _tcp;
    private readonly TurnResponseWriter _responses;
    private readonly TurnMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly TurnEventLog _events;
    private readonly ILogger _logger;

    public TurnAllocateHandler(
        TurnOptions options,
        TurnAllocationTable<TurnAllocation, Socket> allocations,
        RelayPortBinder binder,
        RelayIoLoopGroup loops,
        TurnTcpRelay tcp,
        TurnResponseWriter responses,
        TurnMetrics metrics,
        TimeProvider time,
        TurnEventLog events,
        ILogger<TurnAllocateHandler> logger)
    {
        _events = events;
        _time = time;
        _options = options;
        _allocations = allocations;
        _binder = binder;
        _loops = loops;
        _tcp = tcp;
        _responses = responses;
        _metrics = metrics;
        _logger = logger;
    }

    public int Allocate(in StunMessage request, in TurnContext context, TurnAllocation? existing, in TurnAuthentication auth, Span<byte> response)
    {
        var header = request.Header;
        if (existing is not null)
        {
            // RFC 8656 §7.2: a retransmitted Allocate gets the original success; anything else is 437.
            return existing.AllocateTransaction == header.TransactionId
                ? AllocateSuccess(header, existing, context, auth, response)
                : _responses.Error(header, response, 437, "Allocation Mismatch"u8, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.RequestedTransport, out var transport))
        {
            return _responses.Error(header, response, 400, "REQUESTED-TRANSPORT missing"u8, auth);
        }

        var tcpRelay = transport[0] == RequestedTransportTcp;
        if (transport[0] != RequestedTransportUdp && !tcpRelay)
        {
            return _responses.Error(header, response, 442, "Unsupported Transport Protocol"u8, auth);
        }

        // RFC 6062 §5.1: a TCP relay is allocated over a TCP or TLS control connection only, and has
        // no port pairs (EVEN-PORT) or dual families.
        if (tcpRelay && context.Transport == StunTransport.Udp)
        {
            return _responses.Error(header, response, 400, "TCP relay needs a TCP or TLS connection"u8, auth);
        }

        if (tcpRelay && (request.HasAttribute(StunAttributeType.EvenPort) || request.HasAttribute(StunAttributeType.ReservationToken)
            || request.HasAttribute(StunAttributeType.AdditionalAddressFamily) || LegacyAdditionalFamily(request) >= 0))
        {
            return _responses.Error(header, response, 400, "EVEN-PORT, RESERVATION-TOKEN and dual allocation are UDP only"u8, auth);
        }

        var hasFamily = request.TryGetAttribute(StunAttributeType.RequestedAddressFamily, out var familyValue);
        var additionalFamily = request.TryGetAttribute(StunAttributeType.AdditionalAddressFamily, out var additionalValue) ? additionalValue[0] : -1;
        var legacyDual = false;
        if (additionalFamily < 0)
        {
            additionalFamily = LegacyAdditionalFamily(request);
            legacyDual = additionalFamily >= 0;
        }

        var hasAdditional = additionalFamily >= 0;

        var hasToken = request.TryGetAttribute(StunAttributeType.ReservationToken, out var tokenValue);
        var hasEvenPort = request.TryGetAttribute(StunAttributeType.EvenPort, out var evenPort);

        // RFC 8656 §7.2: these combinations are contradictions. Steps 8 and 9 too: EVEN-PORT with R=1 cannot
        // reserve a pair for a dual allocation, and ADDITIONAL-ADDRESS-FAMILY can only ask for IPv6 (it was
        // granted as a plain IPv4 allocation before, where the RFC demands 400).
        if ((hasFamily && hasAdditional) || (hasToken && (hasEvenPort || hasFamily || hasAdditional))
            || (hasAdditional && (additionalFamily != StunAddress.FamilyIPv6 || (hasEvenPort && (evenPort[0] & 0x80) != 0))))
        {
            return _responses.Error(header, response, 400, "Conflicting attributes"u8, auth);
        }

        var family = AddressFamily.InterNetwork;
        if (hasFamily)
        {
            family = familyValue[0] switch
            {
                StunAddress.FamilyIPv4 => AddressFamily.InterNetwork,
                StunAddress.FamilyIPv6 => AddressFamily.InterNetworkV6,
                _ => AddressFamily.Unknown,
            };
        }

        var address = family == AddressFamily.InterNetwork ? _binder.RelayIPv4 : family == AddressFamily.InterNetworkV6 ? _binder.RelayIPv6 : null;
        if (address is null)
        {
            return _responses.Error(header, response, 440, "Address Family not Supported"u8, auth);
        }

        var lifetime = TurnLifetimes.Granted(request, _options);
        var username = Encoding.UTF8.GetString(auth.Username);
        if (_allocations.TryReserveQuota(username, context.Client) is { } limit)
        {
            _metrics.LimitHit(limit);
            _events.LimitHit(limit, context.Client, username, 486);
            return _responses.Error(header, response, 486, "Allocation Quota Reached"u8, auth);
        }

        // RFC 8656 §7.2: a RESERVATION-TOKEN takes the port an earlier EVEN-PORT (R=1) set aside; EVEN-PORT
        // with R=1 binds an even port and reserves the next one (RTP, then RTCP).
        Socket? reserved = null;
        Socket? socket;
        if (hasToken)
        {
            socket = _allocations.TakeReservation(BinaryPrimitives.ReadUInt64BigEndian(tokenValue));
            if (socket is not null)
            {
                _metrics.Reservation(redeemed: true);
            }
        }
        else if (tcpRelay)
        {
            socket = _binder.BindTcpListener(address);
        }
        else
        {
            var reserveNext = hasEvenPort && (evenPort[0] & 0x80) != 0;
            if (reserveNext && !_allocations.HasRoomForReservation)
            {
                // The allocation is still granted, on an even port, just without a reserved twin.
                reserveNext = false;
                _metrics.LimitHit(TurnLimit.Reservations);
                _events.LimitHit(TurnLimit.Reservations, context.Client, username, 200);
            }

            socket = _binder.BindUdp(address, hasEvenPort, reserveNext, out reserved);
        }

        if (socket is null)
        {
            _allocations.ReleaseQuota(username, context.Client);
            _metrics.LimitHit(TurnLimit.RelayPorts);
            _events.LimitHit(TurnLimit.RelayPorts, context.Client, username, 508);
            return _responses.Error(header, response, 508, "Insufficient Capacity"u8, auth);
        }

        // The IPv6 half of a dual allocation is best effort: when it cannot be had, the IPv4 allocation
        // stands and ADDRESS-ERROR-CODE says why (RFC 8656 §7.2).
        Socket? secondary = null;
        var additionalError = 0;
        if (hasAdditional)
        {
            secondary = _binder.RelayIPv6 is { } v6 ? _binder.BindUdp(v6, evenPort: false, reserveNext: false, out _) : null;
            additionalError = secondary is not null ? 0 : _binder.RelayIPv6 is null ? 440 : 508;
        }

        // RFC 8656 §7.2 step 4 (§14.8): DONT-FRAGMENT asks that relayed datagrams leave with DF set.
        if (request.HasAttribute(StunAttributeType.DontFragment))
        {
            RelayPortBinder.SetDontFragment(socket);
            if (secondary is not null)
            {
                RelayPortBinder.SetDontFragment(secondary);
            }
        }

        var bound = (IPEndPoint)socket.LocalEndPoint!;
        var advertised = family == AddressFamily.InterNetwork && _binder.AdvertisedIPv4 is { } external ? new IPEndPoint(external, bound.Port) : bound;
        TurnClientSink sink = context.Stream is { } stream ? stream : new UdpClientSink(context.UdpSocket!, context.Client);
        var allocation = new TurnAllocation(context.FiveTuple, username, auth.Key.ToArray(), auth.Algorithm, socket, StunAddress.FromEndPoint(advertised), sink, header.TransactionId,
            secondary, secondary is null ? default : StunAddress.FromEndPoint((IPEndPoint)secondary.LocalEndPoint!));
        allocation.SetLifetime(_time.GetMonotonicMilliseconds(), lifetime);
        if (!_allocations.TryAdd(allocation))
        {
            // Two copies of one Allocate raced on different threads; the other one won.
            _allocations.ReleaseQuota(username, context.Client);
            socket.Dispose();
            secondary?.Dispose();
            reserved?.Dispose();
            return _allocations.Find(context.FiveTuple) is { } winner
                ? AllocateSuccess(header, winner, context, auth, response)
                : _responses.Error(header, response, 437, "Allocation Mismatch"u8, auth);
        }

        _metrics.AllocationCreated(dual: secondary is not null);
        if (tcpRelay)
        {
            _tcp.StartAccepting(allocation);
        }
        else
        {
            try
            {
                _loops.Add(allocation);
            }
            catch (IOException e)
            {
                // epoll refused the descriptor (out of kernel memory or watches): no relay without it.
                TurnLog.LogLoopFailed(_logger, e);
                _allocations.Delete(allocation);
                return _responses.Error(header, response, 508, "Insufficient Capacity"u8, auth);
            }
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            TurnLog.LogAllocationCreated(_logger, context.Client, allocation.RelayedAddress, allocation.SecondarySocket is null ? (hasAdditional ? "IPv6 refused" : "none") : allocation.SecondaryRelayedAddress.ToString(), LogText.Safe(username));
        }
        var token = 0UL;
        if (reserved is not null)
        {
            token = _allocations.AddReservation(reserved, _time.GetMonotonicMilliseconds());
            _metrics.Reservation(redeemed: false);
        }

        return AllocateSuccess(header, allocation, context, auth, response, additionalError, token, legacyDual);
    }

    /// <summary>
    /// coturn (through 4.6) sends ADDITIONAL-ADDRESS-FAMILY under the code point of the draft that became
    /// RFC 8656 (0x8032, with ADDRESS-ERROR-CODE at 0x8033), not IANA's 0x8000. It is comprehension-
    /// optional, so the codec passes it unchecked: its length is checked here.
    /// </summary>
    private static int LegacyAdditionalFamily(in StunMessage request)
    {
        foreach (var attribute in request)
        {
            if (attribute.Type == LegacyAdditionalAddressFamily && attribute.Value.Length == 4)
            {
                return attribute.Value[0];
            }
        }

        return -1;
    }

    private int AllocateSuccess(in StunHeader header, TurnAllocation allocation, in TurnContext context, in TurnAuthentication auth, Span<byte> response, int additionalError = 0, ulong reservationToken = 0, bool legacyDual = false)
    {
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Allocate, StunClass.SuccessResponse), header.TransactionId);
        writer.WriteXorAddress(StunAttributeType.XorRelayedAddress, allocation.RelayedAddress);
        if (allocation.SecondarySocket is not null)
        {
            writer.WriteXorAddress(StunAttributeType.XorRelayedAddress, allocation.SecondaryRelayedAddress);
        }

        if (reservationToken != 0)
        {
            BinaryPrimitives.WriteUInt64BigEndian(writer.BeginAttribute((ushort)StunAttributeType.ReservationToken, 8), reservationToken);
        }

        if (additionalError != 0)
        {
            // RFC 8656 §18.12: family, then an ERROR-CODE-shaped class and number, then a reason.
            var reason = additionalError == 440 ? "Address Family not Supported"u8 : "Insufficient Capacity"u8;
            var value = writer.BeginAttribute(legacyDual ? LegacyAddressErrorCode : (ushort)StunAttributeType.AddressErrorCode, 4 + reason.Length);
            value[0] = StunAddress.FamilyIPv6;
            value[1] = 0;
            value[2] = (byte)(additionalError / 100);
            value[3] = (byte)(additionalError % 100);
            reason.CopyTo(value[4..]);
        }

        writer.WriteUInt32(StunAttributeType.Lifetime, (uint)Math.Max(0, (allocation.ExpiresAtMs - _time.GetMonotonicMilliseconds() + 500) / 1000));
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, context.Client);
        return _responses.Finish(ref writer, auth, 200);
    }
}
