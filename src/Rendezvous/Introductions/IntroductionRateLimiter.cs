using Relay.Protocol.Primitives;

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
    private readonly Dictionary<string, TokenBucket> _buckets = new(StringComparer.Ordinal);

    public int Tracked => _buckets.Count;

    /// <summary>Takes one token for <paramref name="device"/>; false when its bucket is empty.</summary>
    public bool TryAcquire(string device)
    {
        if (!_buckets.TryGetValue(device, out var bucket))
        {
            if (_buckets.Count >= maxTracked)
            {
                return false;
            }

            bucket = new TokenBucket(perMinute, perMinute / 60.0, time);
            _buckets.Add(device, bucket);
        }

        return bucket.TryTake();
    }

    /// <summary>Forgets devices whose bucket has refilled.</summary>
    public void Prune()
    {
        List<string>? full = null;
        foreach (var (device, bucket) in _buckets)
        {
            if (bucket.IsFull)
            {
                (full ??= []).Add(device);
            }
        }

        foreach (var device in full ?? [])
        {
            _buckets.Remove(device);
        }
    }
}
