using System.Net;

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

    private readonly Dictionary<IPAddress, LinkedListNode<Bucket>> _buckets = [];
    private readonly LinkedList<Bucket> _byAge = new();
    private readonly Lock _lock = new();
    private readonly double _capacity;
    private readonly double _tokensPerTick;
    private readonly TimeProvider _time;

    /// <param name="failuresPerMinute">0 or less turns limiting off.</param>
    public MqttAuthRateLimiter(int failuresPerMinute, TimeProvider time, int maxTrackedAddresses = DefaultMaxTrackedAddresses)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTrackedAddresses, 1);
        _time = time;
        _capacity = Math.Max(0, failuresPerMinute);
        _tokensPerTick = _capacity / TimeSpan.TicksPerMinute;
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
                return _buckets.Count;
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
            return _buckets.TryGetValue(address, out var node) && Refill(node.Value) < 1;
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
            var bucket = Touch(address);
            if (Refill(bucket) < 1)
            {
                return false;
            }

            bucket.Tokens -= 1;
            return true;
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
            if (_buckets.TryGetValue(address, out var node))
            {
                node.Value.Tokens = Math.Min(_capacity, Refill(node.Value) + 1);
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
            var bucket = Touch(address);
            bucket.Tokens = Math.Max(0, Refill(bucket) - 1);
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
    private Bucket Touch(IPAddress source)
    {
        if (_buckets.TryGetValue(source, out var node))
        {
            _byAge.Remove(node);
        }
        else
        {
            if (_buckets.Count >= MaxTrackedAddresses)
            {
                var oldest = _byAge.First!;
                _byAge.RemoveFirst();
                _buckets.Remove(oldest.Value.Address);
            }

            node = new LinkedListNode<Bucket>(new Bucket(source, _capacity, _time.GetUtcNow().UtcTicks));
            _buckets.Add(source, node);
        }

        _byAge.AddLast(node);
        return node.Value;
    }

    private double Refill(Bucket bucket)
    {
        var now = _time.GetUtcNow().UtcTicks;
        if (now > bucket.UpdatedTicks)
        {
            bucket.Tokens = Math.Min(_capacity, bucket.Tokens + ((now - bucket.UpdatedTicks) * _tokensPerTick));
            bucket.UpdatedTicks = now;
        }

        return bucket.Tokens;
    }

    private sealed class Bucket(IPAddress address, double tokens, long updatedTicks)
    {
        public IPAddress Address { get; } = address;

        public double Tokens { get; set; } = tokens;

        public long UpdatedTicks { get; set; } = updatedTicks;
    }
}
