using System.Collections.Concurrent;

namespace Relay.Server.Api;

/// <summary>
/// A token bucket per API token (<c>Relay:Api:RateLimit</c>). Keys are token ids, so the table is
/// bounded by the tokens that exist: unauthenticated requests are refused before they reach it.
/// </summary>
internal sealed class ApiRateLimiter(ApiRateLimitOptions options, TimeProvider time)
{
    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);

    /// <summary>True when the request may go on; otherwise <paramref name="retryAfter"/> says when one will.</summary>
    public bool TryAcquire(string tokenId, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        if (!options.Enabled)
        {
            return true;
        }

        var bucket = _buckets.GetOrAdd(tokenId, static (_, state) => new Bucket(state.options.Burst, state.time.GetTimestamp()), (options, time));
        lock (bucket)
        {
            var now = time.GetTimestamp();
            var elapsed = time.GetElapsedTime(bucket.Stamp, now).TotalSeconds;
            bucket.Tokens = Math.Min(options.Burst, bucket.Tokens + (elapsed * options.RequestsPerSecond));
            bucket.Stamp = now;
            if (bucket.Tokens >= 1)
            {
                bucket.Tokens -= 1;
                return true;
            }

            retryAfter = TimeSpan.FromSeconds(Math.Ceiling((1 - bucket.Tokens) / options.RequestsPerSecond));
            return false;
        }
    }

    /// <summary>Forgets a revoked token's bucket.</summary>
    public void Forget(string tokenId) => _buckets.TryRemove(tokenId, out _);

    private sealed class Bucket(double tokens, long stamp)
    {
        public double Tokens { get; set; } = tokens;

        public long Stamp { get; set; } = stamp;
    }
}
