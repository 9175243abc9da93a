using System.Buffers.Binary;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Server.Primitives;

namespace Relay.Server.Turn;

/// <summary>Refresh (RFC 8656 §8): extends an allocation's lifetime, or deletes it with LIFETIME 0.</summary>
internal sealed class TurnRefreshHandler
{
    private readonly TurnOptions _options;
    private readonly TurnAllocationTable<TurnAllocation, Socket> _allocations;
    private readonly TurnResponseWriter _responses;
    private readonly TimeProvider _time;

    public TurnRefreshHandler(TurnOptions options, TurnAllocationTable<TurnAllocation, Socket> allocations, TurnResponseWriter responses, TimeProvider time)
    {
        _time = time;
        _options = options;
        _allocations = allocations;
        _responses = responses;
    }

    public int Refresh(in StunMessage request, TurnAllocation? allocation, in TurnAuthentication auth, Span<byte> response)
    {
        var header = request.Header;
        if (allocation is null)
        {
            return _responses.Error(header, response, 437, "Allocation Mismatch"u8, auth);
        }

        // RFC 8656 §8.2: a REQUESTED-ADDRESS-FAMILY that is not the allocation's is 443.
        if (request.TryGetAttribute(StunAttributeType.RequestedAddressFamily, out var family)
            && !allocation.ServesFamily(family[0] == StunAddress.FamilyIPv4 ? AddressFamily.InterNetwork : family[0] == StunAddress.FamilyIPv6 ? AddressFamily.InterNetworkV6 : AddressFamily.Unknown))
        {
            return _responses.Error(header, response, 443, "Peer Address Family Mismatch"u8, auth);
        }

        var lifetime = 0;
        if (!request.TryGetAttribute(StunAttributeType.Lifetime, out var requested) || BinaryPrimitives.ReadUInt32BigEndian(requested) != 0)
        {
            lifetime = TurnLifetimes.Granted(request, _options);
            allocation.SetLifetime(_time.GetMonotonicMilliseconds(), lifetime);
        }
        else
        {
            _allocations.Delete(allocation);
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Refresh, StunClass.SuccessResponse), header.TransactionId);
        writer.WriteUInt32(StunAttributeType.Lifetime, (uint)lifetime);
        return _responses.Finish(ref writer, auth, 200);
    }
}
