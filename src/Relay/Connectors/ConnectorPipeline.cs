using System.Threading.Channels;
using Polly;
using Polly.Retry;
using Polly.Timeout;
using Relay.Server.Primitives;

namespace Relay.Server.Connectors;

/// <summary>Where a connector writes: one batch per call, in order.</summary>
internal interface IConnectorTarget : IAsyncDisposable
{
    /// <summary>
    /// Writes the whole batch or throws: <see cref="ConnectorRejectedException"/> when the target refuses it for
    /// good, anything else when it may take it later. A batch may be written again after a failure that came
    /// after the target kept it (a lost answer): delivery is at least once.
    /// </summary>
    Task DeliverAsync(IReadOnlyList<ConnectorMessage> batch, CancellationToken cancellationToken);
}

/// <summary>
/// One connector: a bounded memory buffer that the broker's read loops fill without waiting, and one loop that
/// empties it into the target in batches. The failure policy, in order:
/// <list type="number">
/// <item>a failed batch is retried quickly (Polly: <c>MaxRetryAttempts</c>, exponential backoff with jitter, a timeout per try);</item>
/// <item>then the target counts as down: the batch, and everything the buffer receives while the target is down,
/// is appended to the spill files (up to <c>SpillMaxBytes</c>), and the target is probed with one try at a time,
/// waiting twice as long each time up to <c>MaxBackoffSeconds</c>;</item>
/// <item>once it takes a batch again, the spill is delivered first, oldest first, and new messages keep going
/// through the disk until it is empty, so order is kept;</item>
/// <item>a message that finds the memory buffer full, or the spill full, is dropped and counted by reason.</item>
/// </list>
/// With spilling off, a failed batch stays in memory and is retried, and the buffer is the only bound. Nothing
/// is lost without a count in <c>relay_connectors_dropped_total</c>. The memory buffer does not survive a
/// crash (the broker's PUBACK never waited for it); the spill does.
/// </summary>
internal sealed partial class ConnectorPipeline : IAsyncDisposable
{
    /// <summary>Rough bytes per batch, beside <c>BatchSize</c>: one POST or COPY should not carry hundreds of MiB.</summary>
    private const long BatchMaxBytes = 4 * 1024 * 1024;

    private readonly int _index;
    private readonly ConnectorOptions _options;
    private readonly IConnectorTarget _target;
    private readonly ConnectorSpillQueue? _spill;
    private readonly ConnectorMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly LogThrottle _logThrottle;
    private readonly Channel<ConnectorMessage> _buffer;
    private readonly ResiliencePipeline _deliver;
    private readonly ResiliencePipeline _probe;
    private readonly CancellationTokenSource _stopping = new();
    private long _bufferedBytes;
    private volatile bool _closed;
    private volatile bool _down;
    private Task _loop = Task.CompletedTask;
    private int _disposed;

    public ConnectorPipeline(
        int index, ConnectorOptions options, IConnectorTarget target, ConnectorSpillQueue? spill, ConnectorMetrics metrics, TimeProvider time, ILogger logger)
    {
        _index = index;
        _options = options;
        _target = target;
        _spill = spill;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _logThrottle = new LogThrottle(4, TimeSpan.FromSeconds(10), time);

        // Full means "spill or drop, and count", decided by the caller: never wait on a broker read loop.
        _buffer = Channel.CreateBounded<ConnectorMessage>(new BoundedChannelOptions(options.BufferCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        var timeout = TimeSpan.FromSeconds(options.TimeoutSeconds);
        var deliver = new ResiliencePipelineBuilder { TimeProvider = time };
        if (options.MaxRetryAttempts > 0)
        {
            deliver.AddRetry(new RetryStrategyOptions
            {
                // A refusal is final; a cancellation is ours (stopping). Timeouts and faults are retried.
                ShouldHandle = new PredicateBuilder().Handle<Exception>(static e => e is not (ConnectorRejectedException or OperationCanceledException)),
                MaxRetryAttempts = options.MaxRetryAttempts,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(options.InitialBackoffMilliseconds),
                MaxDelay = TimeSpan.FromSeconds(options.MaxBackoffSeconds),
                OnRetry = _ =>
                {
                    _metrics.CountRetry(_index);
                    return default;
                },
            });
        }

        _deliver = deliver.AddTimeout(timeout).Build();
        _probe = new ResiliencePipelineBuilder { TimeProvider = time }.AddTimeout(timeout).Build();
        if (spill is not null)
        {
            _metrics.SetSpill(index, spill.Count, spill.Bytes);
            if (spill.Discarded > 0)
            {
                _metrics.CountDropped(index, ConnectorDropReason.SpillDamaged, spill.DiscardedRecords);
                LogSpillDamaged(_logger, options.Name, spill.Discarded);
            }
        }
    }

    public string Name => _options.Name;

    public string TopicFilter => _options.TopicFilter;

    /// <summary>
    /// Takes <paramref name="message"/> into the memory buffer without waiting; false when the buffer is full
    /// (or the server is stopping), in which case the message is dropped and counted.
    /// </summary>
    public bool Offer(ConnectorMessage message)
    {
        var weight = message.Weight;
        if (!_closed)
        {
            if (Interlocked.Add(ref _bufferedBytes, weight) <= _options.BufferMaxBytes && _buffer.Writer.TryWrite(message))
            {
                _metrics.AddBuffered(_index, 1);
                return true;
            }

            Interlocked.Add(ref _bufferedBytes, -weight);
        }

        Drop(_closed ? ConnectorDropReason.Shutdown : ConnectorDropReason.BufferFull, 1);
        return false;
    }

    public void Start() => _loop = Task.Run(() => RunAsync(_stopping.Token));

    /// <summary>
    /// Stops taking messages; delivers what memory holds if the target is up (until <paramref name="cancellationToken"/>),
    /// and spills the rest (counted as dropped when spilling is off). A down target is not waited for.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _closed = true;
        _buffer.Writer.TryComplete();
        if (_down)
        {
            await _stopping.CancelAsync();
        }

        await using (cancellationToken.Register(static s => ((CancellationTokenSource)s!).Cancel(), _stopping))
        {
            await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync();
        await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stopping.Dispose();
        _spill?.Dispose();
        await _target.DisposeAsync();
    }

    private async Task RunAsync(CancellationToken stopping)
    {
        var backoff = TimeSpan.FromMilliseconds(_options.InitialBackoffMilliseconds);
        List<ConnectorMessage>? held = null;
        try
        {
            while (!stopping.IsCancellationRequested)
            {
                if (_closed && (_down || _spill is { Count: > 0 }))
                {
                    // Stopping: what is on disk stays there for the next start; a down target is not waited for.
                    break;
                }

                // Behind (a spill to read) or down: new messages go through the disk after the older ones.
                if (_spill is { Count: > 0 })
                {
                    MoveBufferToSpill();
                }

                List<ConnectorMessage>? batch;
                var fromSpill = false;
                if (held is not null)
                {
                    batch = held;
                }
                else if (_spill is { Count: > 0 })
                {
                    batch = _spill.Peek(_options.BatchSize, BatchMaxBytes);
                    fromSpill = true;
                    SpillChanged();
                    if (batch.Count == 0)
                    {
                        continue;
                    }
                }
                else
                {
                    batch = await TakeBatchAsync(stopping);
                    if (batch is null)
                    {
                        break;
                    }
                }

                try
                {
                    await (_down ? _probe : _deliver).ExecuteAsync(
                        static (state, token) => new ValueTask(state.Target.DeliverAsync(state.Batch, token)),
                        (Target: _target, Batch: batch),
                        stopping);
                    held = null;
                    Delivered(batch, fromSpill);
                    backoff = TimeSpan.FromMilliseconds(_options.InitialBackoffMilliseconds);
                }
                catch (ConnectorRejectedException e)
                {
                    held = null;
                    if (fromSpill)
                    {
                        _spill!.Commit();
                        SpillChanged();
                    }

                    Drop(ConnectorDropReason.Rejected, batch.Count, e.Message);
                }
                catch (Exception e) when (!stopping.IsCancellationRequested)
                {
                    _metrics.CountRetry(_index);
                    GoDown(e);
                    held = null;
                    if (!fromSpill)
                    {
                        if (_spill is null)
                        {
                            held = batch;
                        }
                        else
                        {
                            SpillOrDrop(batch);
                        }
                    }

                    await WaitAsync(Jittered(backoff), stopping);
                    backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(_options.MaxBackoffSeconds).Ticks));
                }
                catch (Exception) when (stopping.IsCancellationRequested)
                {
                    if (!fromSpill)
                    {
                        held = batch;
                    }

                    break;
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
        finally
        {
            // What memory still holds goes to disk for the next start, or is counted.
            if (held is not null)
            {
                SpillOrDrop(held, ConnectorDropReason.Shutdown);
            }

            MoveBufferToSpill(ConnectorDropReason.Shutdown);
        }
    }

    private async Task<List<ConnectorMessage>?> TakeBatchAsync(CancellationToken stopping)
    {
        while (await _buffer.Reader.WaitToReadAsync(stopping))
        {
            var batch = TakeAvailable(_options.BatchSize);
            if (batch.Count > 0)
            {
                return batch;
            }
        }

        return null;
    }

    private List<ConnectorMessage> TakeAvailable(int max)
    {
        var batch = new List<ConnectorMessage>();
        long bytes = 0;
        while (batch.Count < max && bytes < BatchMaxBytes && _buffer.Reader.TryRead(out var message))
        {
            var weight = message.Weight;
            Interlocked.Add(ref _bufferedBytes, -weight);
            bytes += weight;
            batch.Add(message);
        }

        _metrics.AddBuffered(_index, -batch.Count);
        return batch;
    }

    // While the target is down: wait out the backoff, but keep the memory buffer empty (into the spill) so the
    // broker's messages are not dropped for want of room while there is disk.
    private async Task WaitAsync(TimeSpan delay, CancellationToken stopping)
    {
        if (_spill is null)
        {
            await Task.Delay(delay, _time, stopping);
            return;
        }

        using var timer = new CancellationTokenSource(delay, _time);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(stopping, timer.Token);
        while (true)
        {
            MoveBufferToSpill();
            try
            {
                if (!await _buffer.Reader.WaitToReadAsync(wait.Token))
                {
                    return;
                }
            }
            catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
            {
                return;
            }
        }
    }

    private void MoveBufferToSpill(ConnectorDropReason dropWithoutSpill = ConnectorDropReason.BufferFull)
    {
        while (true)
        {
            var batch = TakeAvailable(_options.BatchSize);
            if (batch.Count == 0)
            {
                return;
            }

            SpillOrDrop(batch, dropWithoutSpill);
        }
    }

    private void SpillOrDrop(List<ConnectorMessage> batch, ConnectorDropReason dropWithoutSpill = ConnectorDropReason.BufferFull)
    {
        if (_spill is null)
        {
            Drop(dropWithoutSpill, batch.Count);
            return;
        }

        var appended = 0;
        try
        {
            appended = _spill.Append(batch);
            _metrics.CountSpilled(_index, appended);
            if (appended < batch.Count)
            {
                Drop(ConnectorDropReason.SpillFull, batch.Count - appended);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Drop(ConnectorDropReason.SpillError, batch.Count - appended, LogText.Safe(e.Message));
        }

        SpillChanged();
    }

    private void Delivered(List<ConnectorMessage> batch, bool fromSpill)
    {
        if (fromSpill)
        {
            _spill!.Commit();
            SpillChanged();
        }

        _metrics.CountDelivered(_index, batch.Count);
        if (_down)
        {
            _down = false;
            _metrics.SetUp(_index, true);
            if (_logThrottle.TryEnter(3, out var suppressed))
            {
                LogBackUp(_logger, _options.Name, _spill?.Count ?? 0, suppressed);
            }
        }
    }

    private void GoDown(Exception e)
    {
        if (_down)
        {
            return;
        }

        _down = true;
        _metrics.SetUp(_index, false);
        if (_logThrottle.TryEnter(0, out var suppressed))
        {
            LogDown(_logger, _options.Name, e.GetType().Name, LogText.Safe(e.Message), _spill is null ? 0 : _options.SpillMaxBytes, suppressed);
        }
    }

    private void Drop(ConnectorDropReason reason, long count, string? detail = null)
    {
        if (count <= 0)
        {
            return;
        }

        _metrics.CountDropped(_index, reason, count);
        if (_logThrottle.TryEnter(reason == ConnectorDropReason.Rejected ? 2 : 1, out var suppressed))
        {
            LogDropped(_logger, _options.Name, count, ConnectorMetrics.ReasonName(reason), detail is null ? string.Empty : $"({detail}) ", suppressed);
        }
    }

    private void SpillChanged()
    {
        if (_spill is not null)
        {
            _metrics.SetSpill(_index, _spill.Count, _spill.Bytes);
        }
    }

    // Half to all of the backoff: connectors that failed together do not all probe at the same instant.
    private static TimeSpan Jittered(TimeSpan backoff) => TimeSpan.FromTicks((backoff.Ticks / 2) + Random.Shared.NextInt64((backoff.Ticks / 2) + 1));

    [LoggerMessage(EventId = 9501, Level = LogLevel.Warning,
        Message = "Connector {Name}: target down ({Error}: {Message}); buffering, spilling up to {SpillMaxBytes} bytes to disk, "
            + "probing with backoff; {Suppressed} more since the last line")]
    private static partial void LogDown(ILogger logger, string name, string error, string message, long spillMaxBytes, long suppressed);

    [LoggerMessage(EventId = 9502, Level = LogLevel.Information,
        Message = "Connector {Name}: target back up; {Spilled} spilled messages left to deliver; {Suppressed} more since the last line")]
    private static partial void LogBackUp(ILogger logger, string name, long spilled, long suppressed);

    [LoggerMessage(EventId = 9503, Level = LogLevel.Warning,
        Message = "Connector {Name}: dropped {Count} message(s), reason {Reason} {Detail}(relay_connectors_dropped_total); "
            + "{Suppressed} more lines since the last")]
    private static partial void LogDropped(ILogger logger, string name, long count, string reason, string detail, long suppressed);

    [LoggerMessage(EventId = 9504, Level = LogLevel.Warning,
        Message = "Connector {Name}: {Bytes} damaged bytes in the spill files (a write cut short by a crash) skipped")]
    private static partial void LogSpillDamaged(ILogger logger, string name, long bytes);
}
