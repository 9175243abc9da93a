using System.Net;
using Relay.Protocol.Primitives;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Failed authentications per source, as a token bucket: each source may fail
/// <c>Relay:Mqtt:AuthFailuresPerMinutePerIp</c> times in a burst, and earns one more failure every
/// 60/N seconds. A source is an IPv4 address or an IPv6 /64 (one subscriber's prefix: a host picks any
/// address in it at will). Every attempt takes a token <em>before</em> its credentials are checked and a
/// success gives it back (<see cref="TryAcquire"/> / <see cref="Refund"/>, each atomic), so N concurrent
/// CONNECTs from one source cannot all slip past a check made before any of them failed. A source with no
/// tokens left is refused without checking, so guessing costs the attacker time instead of costing us
/// PBKDF2. The table is bounded: past <see cref="MaxTrackedAddresses"/> the least recently used source is
/// forgotten.
/// </summary>
internal sealed class MqttAuthRateLimiter
{
    public const int DefaultMaxTrackedAddresses = 10_000;

    private readonly Dictionary<IPAddress, LinkedListNode<Source>> _sources = [];
    private readonly LinkedList<Source> _byAge = new();
    private readonly Lock _lock = new();
    private readonly int _capacity;
    private readonly TimeProvider _time;

    /// <param name="failuresPerMinute">0 or less turns limiting off.</param>
    public MqttAuthRateLimiter(int failuresPerMinute, TimeProvider time, int maxTrackedAddresses = DefaultMaxTrackedAddresses)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTrackedAddresses, 1);
        _time = time;
        _capacity = Math.Max(0, failuresPerMinute);
        MaxTrackedAddresses = maxTrackedAddresses;
    }

    public int MaxTrackedAddresses { get; }

    /// <summary>Addresses currently tracked.</summary>
    public int TrackedAddresses
    {
        get
        {
            lock (_lock)
            {
                return _sources.Count;
            }
        }
    }

    /// <summary>True when <paramref name="address"/>'s source has no attempt left (does not take one).</summary>
    public bool IsLimited(IPAddress? address)
    {
        if (address is null || _capacity == 0)
        {
            return false;
        }

        address = SourceOf(address);
        lock (_lock)
        {
            return _sources.TryGetValue(address, out var node) && !node.Value.Bucket.HasToken;
        }
    }

    /// <summary>Takes one attempt from <paramref name="address"/>'s source; false (nothing taken) when none is left.</summary>
    public bool TryAcquire(IPAddress? address)
    {
        if (address is null || _capacity == 0)
        {
            return true;
        }

        address = SourceOf(address);
        lock (_lock)
        {
            return Touch(address).TryTake();
        }
    }

    /// <summary>Gives back the attempt a successful authentication took.</summary>
    public void Refund(IPAddress? address)
    {
        if (address is null || _capacity == 0)
        {
            return;
        }

        address = SourceOf(address);
        lock (_lock)
        {
            if (_sources.TryGetValue(address, out var node))
            {
                node.Value.Bucket.Give();
            }
        }
    }

    /// <summary>Spends one token of <paramref name="address"/>'s source (an attempt that did not go through <see cref="TryAcquire"/>).</summary>
    public void RecordFailure(IPAddress? address)
    {
        if (address is null || _capacity == 0)
        {
            return;
        }

        address = SourceOf(address);
        lock (_lock)
        {
            Touch(address).Spend();
        }
    }

    /// <summary>The bucket key: IPv4 as is (mapped addresses unmapped), IPv6 cut to its /64.</summary>
    public static IPAddress SourceOf(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            return address.MapToIPv4();
        }

        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6)
        {
            return address;
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        bytes[8..].Clear();
        return new IPAddress(bytes);
    }

    // The bucket of a source, created full when new, moved to the young end of the age list. Caller holds the lock.
    private TokenBucket Touch(IPAddress source)
    {
        if (_sources.TryGetValue(source, out var node))
        {
            _byAge.Remove(node);
        }
        else
        {
            if (_sources.Count >= MaxTrackedAddresses)
            {
                var oldest = _byAge.First!;
                _byAge.RemoveFirst();
                _sources.Remove(oldest.Value.Address);
            }

            // N failures a minute: N in a burst, one more every 60/N seconds.
            node = new LinkedListNode<Source>(new Source(source, new TokenBucket(_capacity, _capacity / 60.0, _time)));
            _sources.Add(source, node);
        }

        _byAge.AddLast(node);
        return node.Value.Bucket;
    }

    private sealed record Source(IPAddress Address, TokenBucket Bucket);
}
