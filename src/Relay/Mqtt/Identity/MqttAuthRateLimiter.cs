using System.Net;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Failed authentications per source IP, as a token bucket: each IP may fail
/// <c>Relay:Mqtt:AuthFailuresPerMinutePerIp</c> times in a burst, and earns one more failure every
/// 60/N seconds. An IP with no tokens left is refused without checking its password, so guessing
/// costs the attacker time instead of costing us PBKDF2. The table is bounded: past
/// <see cref="MaxTrackedAddresses"/> the least recently failing IP is forgotten.
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

    /// <summary>True when <paramref name="address"/> has used up its failures.</summary>
    public bool IsLimited(IPAddress? address)
    {
        if (address is null || _capacity == 0)
        {
            return false;
        }

        address = Normalize(address);
        lock (_lock)
        {
            if (!_buckets.TryGetValue(address, out var node))
            {
                return false;
            }

            return Refill(node.Value) < 1;
        }
    }

    /// <summary>Spends one token of <paramref name="address"/>.</summary>
    public void RecordFailure(IPAddress? address)
    {
        if (address is null || _capacity == 0)
        {
            return;
        }

        address = Normalize(address);
        lock (_lock)
        {
            if (_buckets.TryGetValue(address, out var node))
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

                node = new LinkedListNode<Bucket>(new Bucket(address, _capacity, _time.GetUtcNow().UtcTicks));
                _buckets.Add(address, node);
            }

            var bucket = node.Value;
            bucket.Tokens = Math.Max(0, Refill(bucket) - 1);
            _byAge.AddLast(node);
        }
    }

    // IPv4 clients reach a dual-stack listener as ::ffff:a.b.c.d; one client must have one bucket.
    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

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
