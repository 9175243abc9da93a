namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Where PBKDF2 verifications run: at most <see cref="Concurrency"/> at once (cores − 1 by default, so one
/// core always serves the API, health checks, TLS handshakes and the broker), with at most
/// <see cref="MaxWaiting"/> waiting. A verification that cannot start because the pool is full, or that
/// waited longer than <see cref="MaxWait"/>, is not run: the caller answers "server busy" and the device
/// retries with its backoff. A reconnect storm of devices with person-chosen secrets then costs a bounded
/// share of the CPU instead of every thread-pool thread.
/// </summary>
internal sealed class SlowHashPool : IDisposable
{
    private readonly SemaphoreSlim _slots;
    private readonly TimeProvider _time;
    private int _waiting;
    private long _runs;
    private long _refused;

    public SlowHashPool(int concurrency, int maxWaiting, TimeSpan maxWait, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxWaiting, 0);
        ArgumentNullException.ThrowIfNull(time);
        Concurrency = concurrency;
        MaxWaiting = maxWaiting;
        MaxWait = maxWait;
        _time = time;
        _slots = new SemaphoreSlim(concurrency, concurrency);
    }

    /// <summary>cores − 1, at least 1.</summary>
    public static int DefaultConcurrency => Math.Max(1, Environment.ProcessorCount - 1);

    public int Concurrency { get; }

    public int MaxWaiting { get; }

    public TimeSpan MaxWait { get; }

    /// <summary>Verifications waiting for a slot now.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Slow verifications computed.</summary>
    public long Runs => Volatile.Read(ref _runs);

    /// <summary>Verifications refused as busy.</summary>
    public long Refused => Volatile.Read(ref _refused);

    /// <summary>Runs <paramref name="verify"/> on a pool slot; null when refused as busy.</summary>
    public async ValueTask<bool?> RunAsync<TState>(TState state, Func<TState, bool> verify, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(verify);
        if (!_slots.Wait(0))
        {
            if (Interlocked.Increment(ref _waiting) > MaxWaiting)
            {
                Interlocked.Decrement(ref _waiting);
                Interlocked.Increment(ref _refused);
                return null;
            }

            using var deadline = new CancellationTokenSource(MaxWait, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
            try
            {
                await _slots.WaitAsync(linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                Interlocked.Increment(ref _refused);
                return null;
            }
            finally
            {
                Interlocked.Decrement(ref _waiting);
            }
        }

        try
        {
            Interlocked.Increment(ref _runs);

            // Off the caller's thread: a connection's read loop must not compute tens of milliseconds inline.
            return await Task.Run(() => verify(state), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _slots.Release();
        }
    }

    public void Dispose() => _slots.Dispose();
}
