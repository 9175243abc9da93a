namespace Relay.Protocol.Primitives;

/// <summary>
/// A token bucket: it holds at most <see cref="Capacity"/> tokens and refills continuously at
/// <see cref="TokensPerSecond"/>, so its owner may burst <see cref="Capacity"/> and then sustain the rate.
/// Time is the <see cref="TimeProvider"/>'s monotonic timestamp: a wall clock stepping backwards cannot
/// take tokens away, and tests move a fake clock instead of sleeping. It starts full.
/// </summary>
/// <remarks>
/// The one token bucket of the server's limiters (API tokens, MQTT authentication failures, rendezvous
/// introductions) and of the device's offline-queue drain. The STUN UDP limiter keeps its own
/// allocation-free, set-associative table (<c>SourceRateLimiter</c>). Not thread-safe: its owner serializes
/// calls (a lock, or the one loop that owns it).
/// </remarks>
internal sealed class TokenBucket
{
    // A refill of exactly one token's worth of time must yield that token despite floating-point rounding.
    private const double Tolerance = 1e-9;

    private readonly TimeProvider _time;
    private readonly double _tokensPerTimestampTick;
    private double _tokens;
    private long _refilledAt;

    /// <param name="capacity">The most tokens the bucket holds (the burst); 0 refuses everything.</param>
    /// <param name="tokensPerSecond">The refill rate; 0 never refills.</param>
    /// <param name="time">The clock.</param>
    public TokenBucket(double capacity, double tokensPerSecond, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        ArgumentOutOfRangeException.ThrowIfNegative(tokensPerSecond);
        ArgumentNullException.ThrowIfNull(time);
        Capacity = capacity;
        TokensPerSecond = tokensPerSecond;
        _time = time;
        _tokensPerTimestampTick = tokensPerSecond / time.TimestampFrequency;
        _tokens = capacity;
        _refilledAt = time.GetTimestamp();
    }

    public double Capacity { get; }

    public double TokensPerSecond { get; }

    /// <summary>The tokens held now.</summary>
    public double Available => Refill();

    /// <summary>True when a token can be taken now (none is taken).</summary>
    public bool HasToken => Refill() >= 1 - Tolerance;

    /// <summary>True when the bucket is full again: as good as a new one, so a table may forget it.</summary>
    public bool IsFull => Refill() >= Capacity - Tolerance;

    /// <summary>Takes one token; false (nothing taken) when there is none.</summary>
    public bool TryTake() => TryTake(out _);

    /// <summary>Takes one token; false when there is none, and <paramref name="retryAfter"/> is how long until there is.</summary>
    public bool TryTake(out TimeSpan retryAfter)
    {
        var tokens = Refill();
        if (tokens >= 1 - Tolerance)
        {
            _tokens = Math.Max(0, tokens - 1);
            retryAfter = TimeSpan.Zero;
            return true;
        }

        retryAfter = TokensPerSecond > 0 ? TimeSpan.FromSeconds((1 - tokens) / TokensPerSecond) : Timeout.InfiniteTimeSpan;
        return false;
    }

    /// <summary>Takes one token, waiting on the clock until there is one.</summary>
    /// <exception cref="InvalidOperationException">The bucket is empty and never refills.</exception>
    public async ValueTask TakeAsync(CancellationToken cancellationToken)
    {
        while (!TryTake(out var wait))
        {
            if (wait == Timeout.InfiniteTimeSpan)
            {
                throw new InvalidOperationException("The bucket is empty and never refills (TokensPerSecond is 0).");
            }

            await Task.Delay(wait, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Gives one token back (an attempt that turned out not to count), up to the capacity.</summary>
    public void Give() => _tokens = Math.Min(Capacity, Refill() + 1);

    /// <summary>Spends one token whether or not there is one; the bucket does not go below empty.</summary>
    public void Spend() => _tokens = Math.Max(0, Refill() - 1);

    private double Refill()
    {
        var now = _time.GetTimestamp();
        if (now > _refilledAt)
        {
            _tokens = Math.Min(Capacity, _tokens + ((now - _refilledAt) * _tokensPerTimestampTick));
            _refilledAt = now;
        }

        return _tokens;
    }
}
