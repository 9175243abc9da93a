using System.Collections.Concurrent;
using Relay.Protocol.Primitives;

namespace Relay.Server.Api;

/// <summary>
/// A token bucket per API token (<c>Relay:Api:RateLimit</c>). Keys are token ids, so the table is
/// bounded by the tokens that exist: unauthenticated requests are refused before they reach it.
/// </summary>
/// <remarks>
/// Not ASP.NET Core's <c>PartitionedRateLimiter</c>: its token bucket refills in whole periods on its own
/// clock (not the <see cref="TimeProvider"/>, so tests could not move it), allocates a lease per request,
/// and cannot forget a revoked token's partition.
/// </remarks>
internal sealed class ApiRateLimiter(ApiRateLimitOptions options, TimeProvider time)
{
    private readonly ConcurrentDictionary<string, TokenBucket> _buckets = new(StringComparer.Ordinal);

    /// <summary>True when the request may go on; otherwise <paramref name="retryAfter"/> says when one will, in whole seconds.</summary>
    public bool TryAcquire(string tokenId, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        if (!options.Enabled)
        {
            return true;
        }

        var bucket = _buckets.GetOrAdd(tokenId, static (_, state) => new TokenBucket(state.options.Burst, state.options.RequestsPerSecond, state.time), (options, time));

        // One request's bucket at a time; requests of other tokens do not wait for it.
        lock (bucket)
        {
            if (bucket.TryTake(out var wait))
            {
                return true;
            }

            retryAfter = TimeSpan.FromSeconds(Math.Ceiling(wait.TotalSeconds));
            return false;
        }
    }

    /// <summary>Forgets a revoked token's bucket.</summary>
    public void Forget(string tokenId) => _buckets.TryRemove(tokenId, out _);
}
