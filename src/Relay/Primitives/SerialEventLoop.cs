using System.Threading.Channels;

namespace Relay.Server.Primitives;

/// <summary>
/// A hosted service that owns some state and changes it only on its own loop. Other threads (connection
/// read loops, HTTP requests) post events to one bounded channel; the loop drains what is pending, up to
/// a batch, and hands it to <see cref="ProcessAsync"/>, so a handler never races another and a burst costs
/// one pass (one commit, if the subclass commits). A periodic sweep rides the same channel for the same
/// reason. Callers that need an answer put a <see cref="TaskCompletionSource{TResult}"/> in their event.
/// </summary>
/// <typeparam name="TEvent">The events the loop handles; a small closed hierarchy, matched by type.</typeparam>
internal abstract class SerialEventLoop<TEvent> : BackgroundService
    where TEvent : class
{
    private readonly Channel<TEvent> _events;
    private readonly int _maxBatch;
    private readonly TimeSpan _sweepInterval;

    /// <param name="capacity">Events that may wait; beyond it <see cref="TryPost"/> refuses and <see cref="PostAsync"/> waits.</param>
    /// <param name="maxBatch">Most events handed to one <see cref="ProcessAsync"/>.</param>
    /// <param name="sweepInterval">How often <see cref="SweepEvent"/> is posted.</param>
    /// <param name="time">The clock of the sweep timer (a fake one in tests).</param>
    protected SerialEventLoop(int capacity, int maxBatch, TimeSpan sweepInterval, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBatch);
        ArgumentNullException.ThrowIfNull(time);

        // Wait mode: TryPost fails fast when full (callers that can drop), PostAsync waits (callers that cannot).
        _events = Channel.CreateBounded<TEvent>(new BoundedChannelOptions(capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        _maxBatch = maxBatch;
        _sweepInterval = sweepInterval;
        Time = time;
    }

    /// <summary>The service's clock.</summary>
    protected TimeProvider Time { get; }

    /// <summary>The event posted every sweep interval.</summary>
    protected abstract TEvent SweepEvent { get; }

    /// <summary>
    /// Queues <paramref name="e"/> without waiting: false when the queue is full or the loop has stopped.
    /// For callers that must not block (a connection's read loop) and can count the drop.
    /// </summary>
    public bool TryPost(TEvent e) => _events.Writer.TryWrite(e);

    /// <summary>
    /// Queues <paramref name="e"/>, waiting for room: for events that must not be lost. False when the loop
    /// has stopped (nothing will handle it).
    /// </summary>
    public async ValueTask<bool> PostAsync(TEvent e, CancellationToken cancellationToken)
    {
        var writer = _events.Writer;
        if (writer.TryWrite(e))
        {
            return true;
        }

        while (await writer.WaitToWriteAsync(cancellationToken).ConfigureAwait(false))
        {
            if (writer.TryWrite(e))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Handles one batch, in posting order. When it throws, every event of the batch goes to
    /// <see cref="OnAbandoned"/>; an exception other than cancellation also to <see cref="OnBatchFailed"/>, and the loop goes on.
    /// </summary>
    protected abstract Task ProcessAsync(List<TEvent> batch, CancellationToken cancellationToken);

    /// <summary>A batch threw: log it; the loop goes on with the next one.</summary>
    protected abstract void OnBatchFailed(Exception exception);

    /// <summary>
    /// An event of a batch that threw, or still queued when the loop stopped: answer whoever waits for it.
    /// May come for an event that was answered already, so answers must be idempotent (TrySet...).
    /// </summary>
    protected abstract void OnAbandoned(TEvent e);

    protected sealed override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var sweeper = SweepAsync(stoppingToken);
        var batch = new List<TEvent>(_maxBatch);
        var reader = _events.Reader;
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken).ConfigureAwait(false))
            {
                while (batch.Count < _maxBatch && reader.TryRead(out var e))
                {
                    batch.Add(e);
                }

                var handled = false;
                try
                {
                    await ProcessAsync(batch, stoppingToken).ConfigureAwait(false);
                    handled = true;
                }
                catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
                {
                    OnBatchFailed(e);
                }
                finally
                {
                    if (!handled)
                    {
                        // Failed or stopped part way: nobody may be left waiting on this batch's events.
                        foreach (var e in batch)
                        {
                            OnAbandoned(e);
                        }
                    }
                }

                batch.Clear();
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            // Later posts are refused, and whoever waits on an event nobody will handle gets an answer.
            _events.Writer.TryComplete();
            while (reader.TryRead(out var left))
            {
                OnAbandoned(left);
            }
        }

        await sweeper.ConfigureAwait(false);
    }

    // When the queue is full the sweep is skipped: the next tick posts another.
    private async Task SweepAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_sweepInterval, Time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                _events.Writer.TryWrite(SweepEvent);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
