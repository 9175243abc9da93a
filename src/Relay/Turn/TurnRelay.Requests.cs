using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;

namespace Relay.Server.Turn;

internal sealed partial class TurnRelay
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

    private const byte RequestedTransportTcp = 6;

    // RFC 8489 §9.2.4: the list a 401 offers, most preferred first; a client echoes it back.
    private static readonly StunPasswordAlgorithm[] OfferedAlgorithms = [StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5];

    private const byte RequestedTransportUdp = 17;
    private const ushort LegacyAdditionalAddressFamily = 0x8032;
    private const ushort LegacyAddressErrorCode = 0x8033;

    /// <summary>
    /// Handles a TURN request or indication (anything but Binding) and writes the response into
    /// <paramref name="response"/>. Returns its length, or 0 when nothing is to be sent.
    /// </summary>
    public int HandleMessage(ReadOnlySpan<byte> message, in TurnContext context, Span<byte> response) =>
        HandleMessage(message, context, response, out _);

    /// <summary>
    /// As <see cref="HandleMessage(ReadOnlySpan{byte}, in TurnContext, Span{byte})"/>; a successful RFC 6062
    /// ConnectionBind also hands back the peer connection this stream now carries, raw, after the response.
    /// </summary>
    public int HandleMessage(ReadOnlySpan<byte> message, in TurnContext context, Span<byte> response, out TcpPeerConnection? boundPeer)
    {
        boundPeer = null;
        var status = StunMessageReader.TryParse(message, _limits, out var request, out var error);
        if (status != OperationStatus.Done)
        {
            if (status == OperationStatus.NeedMoreData || error.IsHeaderError())
            {
                Metrics.Drop(TurnDropReason.Malformed);
                return 0;
            }

            var header = StunHeader.Read(message);
            if (header.Class != StunClass.Request)
            {
                Metrics.Drop(TurnDropReason.Malformed);
                return 0;
            }

            return Error(header, response, 400, "Malformed attribute"u8, default);
        }

        var requestHeader = request.Header;
        if (request.HasFingerprint && !request.VerifyFingerprint())
        {
            // RFC 8489 §7.3: not STUN after all.
            Metrics.Drop(TurnDropReason.Malformed);
            return 0;
        }

        if (requestHeader.Class == StunClass.Indication)
        {
            if (requestHeader.Method == (ushort)StunMethod.Send)
            {
                HandleSend(request, context);
            }
            else
            {
                Metrics.Drop(TurnDropReason.Malformed);
            }

            return 0;
        }

        if (requestHeader.Class != StunClass.Request)
        {
            Metrics.Drop(TurnDropReason.Malformed);
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
        Metrics.Request(slot);
        if (slot == StunMethodSlot.Other)
        {
            return Error(requestHeader, response, 400, "Unsupported method"u8, default);
        }

        var allocation = Find(context.FiveTuple);
        Span<byte> keyBuffer = stackalloc byte[32];
        var auth = Authenticate(request, context, allocation, keyBuffer, response, out var refused);
        if (!auth.Ok)
        {
            LogRefused(MethodName(slot), context.Client, refused.Code);
            return refused.Length;
        }

        // RFC 8489 §6.3: unknown comprehension-required attributes are looked for "once the authentication
        // checks are done", so an unauthenticated request earns the 401 challenge, and the 420 carries
        // MESSAGE-INTEGRITY: RFC 8489 §9.2.5 has clients discard an unsigned answer to a signed request.
        Span<ushort> unknown = stackalloc ushort[MaxUnknownReported];
        var unknownCount = request.CollectUnknownComprehensionRequired(Understood, unknown);
        if (unknownCount > 0)
        {
            return Error(requestHeader, response, 420, "Unknown Attribute"u8, unknown[..unknownCount], auth);
        }

        return slot switch
        {
            StunMethodSlot.Allocate => Allocate(request, context, allocation, auth, response),
            StunMethodSlot.Refresh => Refresh(request, context, allocation, auth, response),
            StunMethodSlot.CreatePermission => CreatePermission(request, context, allocation, auth, response),
            StunMethodSlot.Connect => Connect(request, context, allocation, auth, response),
            StunMethodSlot.ConnectionBind => ConnectionBind(request, context, allocation, auth, response, out boundPeer),
            _ => ChannelBind(request, context, allocation, auth, response),
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

    /// <summary>The credentials a request proved, used to sign its response (RFC 8489 §9.2.4).</summary>
    private readonly ref struct Auth
    {
        public Auth(ReadOnlySpan<byte> key, bool sha256Integrity, StunPasswordAlgorithm algorithm, ReadOnlySpan<byte> username)
        {
            Key = key;
            Sha256Integrity = sha256Integrity;
            Algorithm = algorithm;
            Username = username;
            Ok = true;
        }

        public bool Ok { get; }

        public ReadOnlySpan<byte> Key { get; }

        public bool Sha256Integrity { get; }

        public StunPasswordAlgorithm Algorithm { get; }

        public ReadOnlySpan<byte> Username { get; }
    }

    private readonly record struct Refusal(int Length, int Code);

    /// <summary>
    /// The long-term credential mechanism (RFC 8489 §9.2.4) as RFC 8656 §5 applies it to every request.
    /// Nothing is stored for a request that fails here: the nonce carries its own expiry and client.
    /// </summary>
    private Auth Authenticate(in StunMessage request, in TurnContext context, TurnAllocation? allocation, Span<byte> keyBuffer, Span<byte> response, out Refusal refused)
    {
        var header = request.Header;
        var hasSha1 = request.HasMessageIntegrity;
        var hasSha256 = request.HasMessageIntegritySha256;
        if (!hasSha1 && !hasSha256)
        {
            refused = new Refusal(Challenge(header, context, response, 401, "Unauthorized"u8), 401);
            return default;
        }

        if (!request.TryGetAttribute(StunAttributeType.Username, out var username)
            || !request.TryGetAttribute(StunAttributeType.Realm, out _)
            || !request.TryGetAttribute(StunAttributeType.Nonce, out var nonce))
        {
            // USERHASH is not offered (the nonce does not set the anonymity bit), so it cannot stand in for USERNAME.
            refused = new Refusal(Error(header, response, 400, "Missing USERNAME, REALM or NONCE"u8, default), 400);
            return default;
        }

        // RFC 8489 §9.2.4 runs its checks "in the order specified": PASSWORD-ALGORITHM(S) (400), then
        // USERNAME and MESSAGE-INTEGRITY (401), and only then the NONCE (438).
        if (!TrySelectAlgorithm(request, out var algorithm))
        {
            refused = new Refusal(Error(header, response, 400, "PASSWORD-ALGORITHM(S) do not match the offer"u8, default), 400);
            return default;
        }

        var keyLength = StunCredentials.KeyLength(algorithm);

        // Later requests on an allocation are checked against the key that created it (RFC 8656 §5).
        var allocationCredentials = allocation is not null && username.SequenceEqual(allocation.UsernameUtf8) && allocation.Algorithm == algorithm;
        var verified = false;
        if (allocationCredentials)
        {
            allocation!.Key.CopyTo(keyBuffer);
            verified = Verify(request, hasSha256, keyBuffer[..keyLength]);
        }
        else
        {
            Span<byte> candidates = stackalloc byte[TurnCredentialStore.MaxCandidates * 32];
            var count = Credentials.GetCandidateKeys(username, algorithm, candidates);
            for (var i = 0; i < count && !verified; i++)
            {
                var key = candidates.Slice(i * keyLength, keyLength);
                if (Verify(request, hasSha256, key))
                {
                    key.CopyTo(keyBuffer);
                    verified = true;
                }
            }
        }

        if (!verified)
        {
            refused = new Refusal(Challenge(header, context, response, 401, "Unauthorized"u8), 401);
            return default;
        }

        if (Nonces.Validate(nonce, context.Client) != NonceCheck.Valid)
        {
            refused = new Refusal(Challenge(header, context, response, 438, "Stale Nonce"u8), 438);
            return default;
        }

        var auth = new Auth(keyBuffer[..keyLength], hasSha256, algorithm, username);
        if (allocation is not null && !allocationCredentials)
        {
            // RFC 8656 §5: only a request that "passes authentication" with other credentials than the
            // allocation's is 441 (before, any other USERNAME got 441 unauthenticated, which told an
            // off-path prober whose allocation a 5-tuple holds). An Allocate on a 5-tuple in use is 437
            // (§7.2 step 2). Both are signed with the requester's key, as RFC 8489 §9.2.4 asks.
            refused = header.Method == (ushort)StunMethod.Allocate
                ? new Refusal(Error(header, response, 437, "Allocation Mismatch"u8, default, auth), 437)
                : new Refusal(Error(header, response, 441, "Wrong Credentials"u8, default, auth), 441);
            return default;
        }

        refused = default;
        return auth;
    }

    private static bool Verify(in StunMessage request, bool sha256, ReadOnlySpan<byte> key) =>
        sha256 ? request.VerifyMessageIntegritySha256(key) : request.VerifyMessageIntegrity(key);

    /// <summary>
    /// RFC 8489 §9.2.4: no PASSWORD-ALGORITHMS and no PASSWORD-ALGORITHM means MD5; otherwise both must be
    /// present, the list must be the one offered, and the choice must be in it.
    /// </summary>
    private static bool TrySelectAlgorithm(in StunMessage request, out StunPasswordAlgorithm algorithm)
    {
        algorithm = StunPasswordAlgorithm.Md5;
        var hasList = request.TryGetAttribute(StunAttributeType.PasswordAlgorithms, out var list);
        var hasChoice = request.TryGetAttribute(StunAttributeType.PasswordAlgorithm, out var choice);
        if (!hasList && !hasChoice)
        {
            return true;
        }

        if (!hasList || !hasChoice || !StunAttributeReader.TryReadPasswordAlgorithm(choice, out algorithm, out _))
        {
            return false;
        }

        var offset = 0;
        var index = 0;
        var chosenOffered = false;
        while (offset < list.Length)
        {
            if (!StunAttributeReader.TryReadPasswordAlgorithmEntry(list, ref offset, out var entry, out _)
                || index >= OfferedAlgorithms.Length || entry != OfferedAlgorithms[index])
            {
                return false;
            }

            chosenOffered |= entry == algorithm;
            index++;
        }

        return index == OfferedAlgorithms.Length && chosenOffered;
    }

    private int Allocate(in StunMessage request, in TurnContext context, TurnAllocation? existing, in Auth auth, Span<byte> response)
    {
        var header = request.Header;
        if (existing is not null)
        {
            // RFC 8656 §7.2: a retransmitted Allocate gets the original success; anything else is 437.
            return existing.AllocateTransaction == header.TransactionId
                ? AllocateSuccess(header, existing, context, auth, response)
                : Error(header, response, 437, "Allocation Mismatch"u8, default, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.RequestedTransport, out var transport))
        {
            return Error(header, response, 400, "REQUESTED-TRANSPORT missing"u8, default, auth);
        }

        var tcpRelay = transport[0] == RequestedTransportTcp;
        if (transport[0] != RequestedTransportUdp && !tcpRelay)
        {
            return Error(header, response, 442, "Unsupported Transport Protocol"u8, default, auth);
        }

        // RFC 6062 §5.1: a TCP relay is allocated over a TCP or TLS control connection only, and has
        // no port pairs (EVEN-PORT) or dual families.
        if (tcpRelay && context.Transport == StunTransport.Udp)
        {
            return Error(header, response, 400, "TCP relay needs a TCP or TLS connection"u8, default, auth);
        }

        if (tcpRelay && (request.HasAttribute(StunAttributeType.EvenPort) || request.HasAttribute(StunAttributeType.ReservationToken)
            || request.HasAttribute(StunAttributeType.AdditionalAddressFamily) || LegacyAdditionalFamily(request) >= 0))
        {
            return Error(header, response, 400, "EVEN-PORT, RESERVATION-TOKEN and dual allocation are UDP only"u8, default, auth);
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
            return Error(header, response, 400, "Conflicting attributes"u8, default, auth);
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

        var address = family == AddressFamily.InterNetwork ? RelayIPv4 : family == AddressFamily.InterNetworkV6 ? RelayIPv6 : null;
        if (address is null)
        {
            return Error(header, response, 440, "Address Family not Supported"u8, default, auth);
        }

        var lifetime = GrantedLifetime(request);
        var username = Encoding.UTF8.GetString(auth.Username);
        if (TryReserveQuota(username) is { } limit)
        {
            Metrics.LimitHit(limit);
            LogLimitHit(limit, context.Client, username, 486);
            return Error(header, response, 486, "Allocation Quota Reached"u8, default, auth);
        }

        // RFC 8656 §7.2: a RESERVATION-TOKEN takes the port an earlier EVEN-PORT (R=1) set aside; EVEN-PORT
        // with R=1 binds an even port and reserves the next one (RTP, then RTCP).
        Socket? reserved = null;
        Socket? socket;
        if (hasToken)
        {
            socket = TakeReservation(BinaryPrimitives.ReadUInt64BigEndian(tokenValue));
            if (socket is not null)
            {
                Metrics.Reservation(redeemed: true);
            }
        }
        else if (tcpRelay)
        {
            socket = BindTcpRelayListener(address);
        }
        else
        {
            // Reservations outlive the allocations that made them, so they have a bound of their own.
            var reserveNext = hasEvenPort && (evenPort[0] & 0x80) != 0;
            if (reserveNext && _reservations.Count >= _options.MaxAllocations)
            {
                // The allocation is still granted, on an even port, just without a reserved twin.
                reserveNext = false;
                Metrics.LimitHit(TurnLimit.Reservations);
                LogLimitHit(TurnLimit.Reservations, context.Client, username, 200);
            }

            socket = BindRelaySocket(address, hasEvenPort, reserveNext, out reserved);
        }

        if (socket is null)
        {
            ReleaseQuota(username);
            Metrics.LimitHit(TurnLimit.RelayPorts);
            LogLimitHit(TurnLimit.RelayPorts, context.Client, username, 508);
            return Error(header, response, 508, "Insufficient Capacity"u8, default, auth);
        }

        // The IPv6 half of a dual allocation is best effort: when it cannot be had, the IPv4 allocation
        // stands and ADDRESS-ERROR-CODE says why (RFC 8656 §7.2).
        Socket? secondary = null;
        var additionalError = 0;
        if (hasAdditional)
        {
            secondary = RelayIPv6 is { } v6 ? BindRelaySocket(v6, evenPort: false, reserveNext: false, out _) : null;
            additionalError = secondary is not null ? 0 : RelayIPv6 is null ? 440 : 508;
        }

        // RFC 8656 §7.2 step 4 (§14.8): DONT-FRAGMENT asks that relayed datagrams leave with DF set.
        if (request.HasAttribute(StunAttributeType.DontFragment))
        {
            SetDontFragment(socket);
            if (secondary is not null)
            {
                SetDontFragment(secondary);
            }
        }

        var bound = (IPEndPoint)socket.LocalEndPoint!;
        var advertised = family == AddressFamily.InterNetwork && AdvertisedIPv4 is { } external ? new IPEndPoint(external, bound.Port) : bound;
        TurnClientSink sink = context.Stream is { } stream ? stream : new UdpClientSink(context.UdpSocket!, context.Client);
        var allocation = new TurnAllocation(context.FiveTuple, username, auth.Key.ToArray(), auth.Algorithm, socket, StunAddress.FromEndPoint(advertised), sink, header.TransactionId,
            secondary, secondary is null ? default : StunAddress.FromEndPoint((IPEndPoint)secondary.LocalEndPoint!));
        allocation.SetLifetime(Environment.TickCount64, lifetime);
        if (!_allocations.TryAdd(context.FiveTuple, allocation))
        {
            // Two copies of one Allocate raced on different threads; the other one won.
            ReleaseQuota(username);
            socket.Dispose();
            secondary?.Dispose();
            reserved?.Dispose();
            return Find(context.FiveTuple) is { } winner
                ? AllocateSuccess(header, winner, context, auth, response)
                : Error(header, response, 437, "Allocation Mismatch"u8, default, auth);
        }

        Metrics.AllocationCreated(dual: secondary is not null);
        if (tcpRelay)
        {
            _ = AcceptPeersAsync(allocation);
        }
        else
        {
            try
            {
                NextLoop().Add(allocation);
            }
            catch (IOException e)
            {
                // epoll refused the descriptor (out of kernel memory or watches): no relay without it.
                LogLoopFailed(e);
                Delete(allocation);
                return Error(header, response, 508, "Insufficient Capacity"u8, default, auth);
            }
        }

        LogAllocationCreated(context.Client, allocation.RelayedAddress, allocation.SecondarySocket is null ? (hasAdditional ? "IPv6 refused" : "none") : allocation.SecondaryRelayedAddress.ToString(), username);
        var token = reserved is null ? 0UL : AddReservation(reserved);
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

    private int AllocateSuccess(in StunHeader header, TurnAllocation allocation, in TurnContext context, in Auth auth, Span<byte> response, int additionalError = 0, ulong reservationToken = 0, bool legacyDual = false)
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

        writer.WriteUInt32(StunAttributeType.Lifetime, (uint)Math.Max(0, (allocation.ExpiresAtMs - Environment.TickCount64 + 500) / 1000));
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, context.Client);
        return Finish(ref writer, auth, 200);
    }

    private int Refresh(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in Auth auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null)
        {
            return Error(header, response, 437, "Allocation Mismatch"u8, default, auth);
        }

        // RFC 8656 §8.2: a REQUESTED-ADDRESS-FAMILY that is not the allocation's is 443.
        if (request.TryGetAttribute(StunAttributeType.RequestedAddressFamily, out var family)
            && !allocation.ServesFamily(family[0] == StunAddress.FamilyIPv4 ? AddressFamily.InterNetwork : family[0] == StunAddress.FamilyIPv6 ? AddressFamily.InterNetworkV6 : AddressFamily.Unknown))
        {
            return Error(header, response, 443, "Peer Address Family Mismatch"u8, default, auth);
        }

        var lifetime = 0;
        if (!request.TryGetAttribute(StunAttributeType.Lifetime, out var requested) || BinaryPrimitives.ReadUInt32BigEndian(requested) != 0)
        {
            lifetime = GrantedLifetime(request);
            allocation.SetLifetime(Environment.TickCount64, lifetime);
        }
        else
        {
            Delete(allocation);
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Refresh, StunClass.SuccessResponse), header.TransactionId);
        writer.WriteUInt32(StunAttributeType.Lifetime, (uint)lifetime);
        return Finish(ref writer, auth, 200);
    }

    private int CreatePermission(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in Auth auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null)
        {
            return Error(header, response, 437, "Allocation Mismatch"u8, default, auth);
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
            return Error(header, response, 400, "XOR-PEER-ADDRESS missing"u8, default, auth);
        }

        var nowMs = Environment.TickCount64;
        var expires = nowMs + (PermissionLifetimeSeconds * 1000L);
        foreach (var attribute in request)
        {
            if (attribute.Type == (ushort)StunAttributeType.XorPeerAddress)
            {
                StunAttributeReader.TryReadXorAddress(attribute.Value, header, out var peer);
                if (!allocation.TryInstallPermission(peer, expires, nowMs, _options.MaxPermissionsPerAllocation))
                {
                    Metrics.LimitHit(TurnLimit.Permissions);
                    LogLimitHit(TurnLimit.Permissions, context.Client, allocation.Username, 508);
                    return Error(header, response, 508, "Insufficient Capacity"u8, default, auth);
                }
            }
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.CreatePermission, StunClass.SuccessResponse), header.TransactionId);
        return Finish(ref writer, auth, 200);
    }

    private int ChannelBind(in StunMessage request, in TurnContext context, TurnAllocation? allocation, in Auth auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null)
        {
            return Error(header, response, 437, "Allocation Mismatch"u8, default, auth);
        }

        if (allocation.IsTcpRelay)
        {
            // RFC 6062 §5: a TCP allocation carries data over its peer connections, never channels.
            return Error(header, response, 400, "Channels need a UDP allocation"u8, default, auth);
        }

        if (!request.TryGetAttribute(StunAttributeType.ChannelNumber, out var numberValue)
            || !request.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue))
        {
            return Error(header, response, 400, "CHANNEL-NUMBER or XOR-PEER-ADDRESS missing"u8, default, auth);
        }

        // RFC 8656 §12.2: numbers outside 0x4000-0x4FFF are 400 (0x7FFF with the RFC 5766 range on).
        var number = BinaryPrimitives.ReadUInt16BigEndian(numberValue);
        if (!(_options.AcceptRfc5766ChannelNumbers ? Protocol.Turn.TurnChannel.IsValidRfc5766Number(number) : Protocol.Turn.TurnChannel.IsValidNumber(number)))
        {
            return Error(header, response, 400, "Channel number out of range"u8, default, auth);
        }

        StunAttributeReader.TryReadXorAddress(peerValue, header, out var peer);
        var refused = RefusePeer(peer, allocation, context, header, auth, response);
        if (refused > 0)
        {
            return refused;
        }

        var nowMs = Environment.TickCount64;
        switch (allocation.TryBindChannel(number, peer, nowMs + (ChannelLifetimeSeconds * 1000L), nowMs, _options.MaxChannelsPerAllocation))
        {
            case ChannelBindResult.Conflict:
                return Error(header, response, 400, "Channel or peer already bound"u8, default, auth);
            case ChannelBindResult.Full:
                Metrics.LimitHit(TurnLimit.Channels);
                LogLimitHit(TurnLimit.Channels, context.Client, allocation.Username, 508);
                return Error(header, response, 508, "Insufficient Capacity"u8, default, auth);
        }

        // RFC 8656 §12.2: binding a channel also installs or refreshes the permission for the peer.
        if (!allocation.TryInstallPermission(peer, nowMs + (PermissionLifetimeSeconds * 1000L), nowMs, _options.MaxPermissionsPerAllocation))
        {
            Metrics.LimitHit(TurnLimit.Permissions);
            return Error(header, response, 508, "Insufficient Capacity"u8, default, auth);
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.ChannelBind, StunClass.SuccessResponse), header.TransactionId);
        return Finish(ref writer, auth, 200);
    }

    /// <summary>
    /// The checks every peer address in a request passes (CreatePermission, ChannelBind, Connect): a
    /// family the allocation relays (443, RFC 8656 §10.2/§12.2), and the peer policy (403). Returns the
    /// length of the error response written, or 0 when the peer is acceptable.
    /// </summary>
    private int RefusePeer(in StunAddress peer, TurnAllocation allocation, in TurnContext context, in StunHeader header, in Auth auth, Span<byte> response)
    {
        if (!allocation.ServesFamily(peer.Family))
        {
            return Error(header, response, 443, "Peer Address Family Mismatch"u8, default, auth);
        }

        if (!PeerPolicy.IsAllowed(peer))
        {
            Metrics.Drop(TurnDropReason.PeerDenied);
            LogPeerDenied(peer, context.Client);
            return Error(header, response, 403, "Forbidden"u8, default, auth);
        }

        return 0;
    }

    /// <summary>RFC 8656 §11.2: a Send indication is relayed if it names a permitted peer; otherwise it vanishes.</summary>
    private void HandleSend(in StunMessage request, in TurnContext context)
    {
        if (!_allocations.TryGetValue(context.FiveTuple, out var allocation) || allocation.IsTcpRelay)
        {
            Metrics.Drop(TurnDropReason.NoAllocation);
            return;
        }

        if (!request.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue) || !request.TryGetAttribute(StunAttributeType.Data, out var data))
        {
            Metrics.Drop(TurnDropReason.Malformed);
            return;
        }

        StunAttributeReader.TryReadXorAddress(peerValue, request.Header, out var peer);
        var nowMs = Environment.TickCount64;
        if (!allocation.ServesFamily(peer.Family) || !allocation.HasPermission(peer, nowMs))
        {
            Metrics.Drop(TurnDropReason.NoPermission);
            return;
        }

        SendToPeer(allocation, data, peer, nowMs);
    }

    private static void SetDontFragment(Socket socket)
    {
        if (socket.AddressFamily == AddressFamily.InterNetwork)
        {
            // IP_MTU_DISCOVER = IP_PMTUDISC_DO on Linux.
            socket.DontFragment = true;
        }
        else
        {
            // IPPROTO_IPV6, IPV6_DONTFRAG.
            socket.SetRawSocketOption(41, 62, [1, 0, 0, 0]);
        }
    }

    /// <summary>RFC 8656 §7.2 and §8.2: at least the default, at most the configured maximum.</summary>
    private int GrantedLifetime(in StunMessage request)
    {
        var lifetime = _options.DefaultLifetimeSeconds;
        if (request.TryGetAttribute(StunAttributeType.Lifetime, out var value))
        {
            lifetime = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(value), (uint)_options.MaxLifetimeSeconds);
            lifetime = Math.Max(lifetime, _options.DefaultLifetimeSeconds);
        }

        return lifetime;
    }

    /// <summary>401 or 438 with REALM, a fresh NONCE and the offered PASSWORD-ALGORITHMS (RFC 8489 §9.2.4).</summary>
    private int Challenge(in StunHeader header, in TurnContext context, Span<byte> response, int code, ReadOnlySpan<byte> reason)
    {
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(header.Method, StunClass.ErrorResponse), header.TransactionId);
        writer.WriteErrorCode(code, reason);
        writer.WriteAttribute(StunAttributeType.Realm, _realm);
        Span<byte> nonce = stackalloc byte[TurnNonceService.MaxLength];
        writer.WriteAttribute(StunAttributeType.Nonce, nonce[..Nonces.Write(context.Client, nonce)]);
        writer.WritePasswordAlgorithms(OfferedAlgorithms);
        return Finish(ref writer, default, code);
    }

    private int Error(in StunHeader header, Span<byte> response, int code, ReadOnlySpan<byte> reason, ReadOnlySpan<ushort> unknown, in Auth auth = default)
    {
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(header.Method, StunClass.ErrorResponse), header.TransactionId);
        writer.WriteErrorCode(code, reason);
        if (!unknown.IsEmpty)
        {
            writer.WriteUnknownAttributes(unknown);
        }

        return Finish(ref writer, auth, code);
    }

    /// <summary>SOFTWARE, then integrity of the kind the request used when it authenticated, then FINGERPRINT.</summary>
    private int Finish(ref StunMessageWriter writer, in Auth auth, int code)
    {
        if (_software.Length > 0)
        {
            writer.WriteAttribute(StunAttributeType.Software, _software);
        }

        if (auth.Ok)
        {
            if (auth.Sha256Integrity)
            {
                writer.WriteMessageIntegritySha256(auth.Key);
            }
            else
            {
                writer.WriteMessageIntegrity(auth.Key);
            }
        }

        writer.WriteFingerprint();
        Metrics.Response(code);
        return writer.Length;
    }
}
