using Relay.Server.Devices;
using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Push.Commands;

/// <summary>
/// The one owner of the in-memory command state (<see cref="ActiveCommands"/> and
/// <see cref="CommandWaiters"/>): every change to it runs here, fed by <see cref="CommandEvent"/>s from the
/// broker (through <see cref="CommandMqttObserver"/>), from request threads and from the sweep timer. A
/// batch of events is applied to memory by the rules of <see cref="CommandLifecycle"/>, its transitions are
/// stored in one transaction (a burst of results costs one commit), and only then are waiters woken and
/// the transitions announced to every <see cref="IPushEventSink"/>. When the commit fails, memory goes back
/// to what is stored. Request threads never touch the state: they post an event and await its answer
/// (CommandLoop.Requests.cs).
/// </summary>
internal sealed partial class CommandLoop : SerialEventLoop<CommandEvent>
{
    private const int Capacity = 65536;
    private const int MaxEventsPerBatch = 1024;
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    private readonly CommandStore _store;
    private readonly IMqttDeviceChannel _channel;
    private readonly PushOptions _options;
    private readonly PushMetrics _metrics;
    private readonly PushLimitHits _limitHits;
    private readonly IPushEventSink[] _sinks;
    private readonly ILogger<CommandLoop> _logger;
    private readonly ActiveCommands _active = new();
    private readonly CommandWaiters _waiters;
    private readonly CommandBatch _batch = new();
    private readonly CommandRetention _retention;

    public CommandLoop(CommandStore store, IMqttDeviceChannel channel, PushOptions options, PushMetrics metrics, PushLimitHits limitHits, IEnumerable<IPushEventSink> sinks, TimeProvider time, ILogger<CommandLoop> logger)
        : base(Capacity, MaxEventsPerBatch, SweepInterval, time)
    {
        _store = store;
        _channel = channel;
        _options = options;
        _metrics = metrics;
        _limitHits = limitHits;
        _sinks = [.. sinks];
        _logger = logger;
        _waiters = new CommandWaiters(options.MaxWaiters);
        _retention = new CommandRetention(store, metrics, options.RetainFinishedDays, logger);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        await _retention.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    public override void Dispose()
    {
        _retention.Dispose();
        base.Dispose();
    }

    protected override CommandEvent SweepEvent => SweepDue.Instance;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        // Before the loop runs, so this thread is the state's only user.
        var active = _store.LoadActive();
        _active.Load(active);
        if (active.Count > 0)
        {
            LogReloaded(active.Count);
        }

        await base.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    protected override async Task ProcessAsync(List<CommandEvent> batch, CancellationToken cancellationToken)
    {
        _batch.Clear();
        var now = Time.GetUtcNow();
        foreach (var e in batch)
        {
            try
            {
                Apply(e, now);
            }
            catch (Exception exception) when (exception is not OutOfMemoryException)
            {
                // A fault in one event (a store read) must not cost the others their commit.
                LogLoopFailed(exception);
                OnAbandoned(e);
            }
        }

        var applied = await CommitAsync(cancellationToken).ConfigureAwait(false);
        if (applied is not null)
        {
            Settle(applied);
        }

        // Committed or failed (and logged): the devices' PUBACKs for these results may go.
        foreach (var arrival in _batch.Results)
        {
            arrival.Settle(applied is not null);
        }

        foreach (var presence in _batch.Presence)
        {
            AnnouncePresence(presence);
        }
    }

    protected override void OnBatchFailed(Exception exception) => LogLoopFailed(exception);

    protected override void OnAbandoned(CommandEvent e)
    {
        switch (e)
        {
            case ResultReceived result:
                result.Arrival.Settle(false);
                break;
            case PlacesRequested places:
                places.Answer.TrySetException(NotHandled());
                break;
            case CancelRequested cancel:
                cancel.Answer.TrySetException(NotHandled());
                break;
            case DeviceRemoved removed:
                removed.Answer.TrySetException(NotHandled());
                break;
            case WaitRequested wait:
                // The caller answers with the state as stored.
                wait.Waiter.TrySetResult(CommandError.None);
                break;
            case CommandsStored:
                // Durable already: the next start reloads them.
                break;
        }

        static InvalidOperationException NotHandled() => new("The command loop stopped or failed before handling this request.");
    }

    /// <summary>
    /// Stores the batch's steps in one transaction; the flags say which the store applied (it refuses a step
    /// for a command it holds as final already). Null when the commit failed: memory is put back.
    /// </summary>
    private async Task<bool[]?> CommitAsync(CancellationToken cancellationToken)
    {
        var changes = _batch.Changes;
        if (changes.Count == 0)
        {
            return [];
        }

        try
        {
            return await _store.ApplyAsync([.. changes.Select(static c => (c.Entry.Seq, c.State, c.At, c.Result))], cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
        {
            LogStoreFailed(e, changes.Count);
            for (var i = changes.Count - 1; i >= 0; i--)
            {
                _active.Restore(changes[i].Entry, changes[i].Previous);
            }

            foreach (var (request, _, _) in _batch.Cancels)
            {
                request.Answer.TrySetException(e);
            }

            foreach (var (request, _) in _batch.Removals)
            {
                request.Answer.TrySetException(e);
            }

            return null;
        }
    }

    /// <summary>After the commit: final commands leave memory, then the stored steps are announced, cancels answered, waiters woken.</summary>
    private void Settle(bool[] applied)
    {
        var changes = _batch.Changes;
        var wake = _batch.Wake;
        foreach (var change in changes)
        {
            if (CommandLifecycle.IsFinal(change.State))
            {
                _active.Retire(change.Entry);
                _waiters.TakeAll(change.Entry.Id, wake);
            }
        }

        _active.RemoveIdleQueues();
        for (var i = 0; i < changes.Count; i++)
        {
            if (applied[i])
            {
                var c = changes[i];
                Announce(new CommandTransition(c.Entry.Id, c.Entry.Device, c.Entry.Name, c.State, c.At, c.Result));
            }
        }

        foreach (var (request, outcome, index) in _batch.Cancels)
        {
            request.Answer.TrySetResult(index >= 0 && !applied[index] ? CommandError.NotCancelable : outcome);
        }

        foreach (var (request, ended) in _batch.Removals)
        {
            request.Answer.TrySetResult(ended);
        }

        foreach (var waiter in wake)
        {
            waiter.TrySetResult(CommandError.None);
        }
    }

    private void Announce(CommandTransition transition)
    {
        _metrics.CountTransition(transition.State);
        foreach (var sink in _sinks)
        {
            try
            {
                sink.OnCommandTransition(transition);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogSinkFailed(e, sink.GetType().Name);
            }
        }
    }

    private void AnnouncePresence(DevicePresence presence)
    {
        foreach (var sink in _sinks)
        {
            try
            {
                sink.OnPresenceChanged(presence);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogSinkFailed(e, sink.GetType().Name);
            }
        }
    }

    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Push: reloaded {Count} command(s) that were not final")]
    private partial void LogReloaded(int count);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Push: result from {Device} for unknown command {Id}; ignored (counted)")]
    private partial void LogUnknownResult(string device, string id);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Debug, Message = "Push: duplicate result from {Device} for command {Id}; ignored")]
    private partial void LogDuplicateResult(string device, string id);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Information, Message = "Push: result from {Device} is not {{\"id\",\"status\":\"succeeded\"|\"failed\",\"payload\"?}}; ignored (counted)")]
    private partial void LogBadResult(string device);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Error, Message = "Push: storing {Count} command transition(s) failed; they will be retried")]
    private partial void LogStoreFailed(Exception exception, int count);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Error, Message = "Push: event sink {Sink} threw; ignored")]
    private partial void LogSinkFailed(Exception exception, string sink);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Error, Message = "Push: command loop failed on a batch")]
    private partial void LogLoopFailed(Exception exception);
}
