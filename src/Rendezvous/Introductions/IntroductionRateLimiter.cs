namespace Relay.Rendezvous.Introductions;

/// <summary>
/// A token bucket per requesting device: <c>MaxIntroductionsPerMinute</c> tokens, refilled evenly over a
/// minute, so a device may burst that many and then sustain that rate. Time comes from the
/// <see cref="TimeProvider"/>, so tests move it by hand. Not thread-safe: one loop owns it.
/// </summary>
/// <remarks>
/// Only devices that used a token in the last minute have an entry: <see cref="Prune"/> drops full
/// buckets, which are indistinguishable from absent ones. Callers are authenticated devices, so the
/// table is bounded by the devices active in one minute, and <paramref name="maxTracked"/> bounds it
/// absolutely: past it a new device is refused until the sweep frees room (fail closed).
/// </remarks>
internal sealed class IntroductionRateLimiter(int perMinute, TimeProvider time, int maxTracked = 1_000_000)
{
    private readonly Dictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);
    private readonly double _capacity = perMinute;
    private readonly double _perSecond = perMinute / 60.0;

    public int Tracked => _buckets.Count;

    /// <summary>Takes one token for <paramref name="device"/>; false when its bucket is empty.</summary>
    public bool TryAcquire(string device)
    {
        var now = time.GetUtcNow();
        if (_buckets.TryGetValue(device, out var bucket))
        {
            var tokens = Refilled(bucket, now);
            if (tokens < 1)
            {
                _buckets[device] = new Bucket(tokens, now);
                return false;
            }

            _buckets[device] = new Bucket(tokens - 1, now);
            return true;
        }

        if (_buckets.Count >= maxTracked)
        {
            return false;
        }

        _buckets[device] = new Bucket(_capacity - 1, now);
        return true;
    }

    /// <summary>Forgets devices whose bucket has refilled.</summary>
    public void Prune()
    {
        var now = time.GetUtcNow();
        List<string>? full = null;
        foreach (var (device, bucket) in _buckets)
        {
            if (Refilled(bucket, now) >= _capacity)
            {
                (full ??= []).Add(device);
            }
        }

        foreach (var device in full ?? [])
        {
            _buckets.Remove(device);
        }
    }

    // A clock that steps backwards (wall time corrected) adds nothing rather than removing tokens.
    private double Refilled(Bucket bucket, DateTimeOffset now) =>
        Math.Min(_capacity, bucket.Tokens + (Math.Max(0, (now - bucket.At).TotalSeconds) * _perSecond));

    private readonly record struct Bucket(double Tokens, DateTimeOffset At);
}
