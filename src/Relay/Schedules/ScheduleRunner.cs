using Relay.Server.Primitives;

namespace Relay.Server.Schedules;

/// <summary>
/// Runs the schedules that are due, on <see cref="TimeProvider"/>. One pass (<see cref="RunDueAsync"/>):
/// finish the runs left pending (by a crash, or by a fault that may pass), then for each due schedule decide
/// by <see cref="ScheduleCatchUp"/> what to run and what to skip, store that decision (the run pending), store
/// the run's commands with its idempotency key, and store the run as finished. Then sleep until the next
/// schedule is due or the API wakes it. A crash before the decision is stored leaves the schedule due (the
/// catch-up policy decides at the next start); after it, the pending run is finished at the next start, and
/// commands it stored already are found by their key, not stored twice.
/// </summary>
internal sealed partial class ScheduleRunner : BackgroundService
{
    /// <summary>Schedules handled per store read; a pass reads again while it gets full batches.</summary>
    public const int BatchSize = 256;

    /// <summary>How soon a pending run whose commands could not be stored is tried again.</summary>
    public static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(5);

    /// <summary>Longest sleep, so a wall clock stepped by the operator is noticed within it.</summary>
    public static readonly TimeSpan MaxWait = TimeSpan.FromMinutes(5);

    private const int SkippedSlot = 0;
    private const int FailedSlot = 1;
    private const int ErrorSlot = 2;

    private readonly ScheduleStore _store;
    private readonly IScheduleDispatch _dispatch;
    private readonly ScheduleOptions _options;
    private readonly ScheduleMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger<ScheduleRunner> _logger;
    private readonly LogThrottle _throttle;
    private readonly SemaphoreSlim _wake = new(0, 1);

    public ScheduleRunner(
        ScheduleStore store, IScheduleDispatch dispatch, ScheduleOptions options, ScheduleMetrics metrics, TimeProvider time, ILogger<ScheduleRunner> logger)
    {
        _store = store;
        _dispatch = dispatch;
        _options = options;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _throttle = new LogThrottle(3, TimeSpan.FromSeconds(10), time);
    }

    /// <summary>A schedule was created or resumed: look again at what is due when.</summary>
    public void Wake()
    {
        try
        {
            _wake.Release();
        }
        catch (SemaphoreFullException)
        {
            // Woken already.
        }
    }

    public override void Dispose()
    {
        _wake.Dispose();
        base.Dispose();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            TimeSpan wait;
            try
            {
                wait = await RunDueAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The schedule store failing: what was decided is pending and is finished on a later pass.
                if (_throttle.TryEnter(ErrorSlot, out var suppressed))
                {
                    LogPassFailed(e, suppressed);
                }

                wait = RetryDelay;
            }

            await WaitAsync(wait, stoppingToken).ConfigureAwait(false);
        }
    }

    /// <summary>One pass over what is pending and due; returns how long to sleep before the next.</summary>
    internal async Task<TimeSpan> RunDueAsync(CancellationToken cancellationToken)
    {
        var retry = false;
        foreach (var schedule in _store.Pending(BatchSize))
        {
            retry |= !await FinishAsync(schedule, schedule.PendingDue!.Value, cancellationToken).ConfigureAwait(false);
        }

        List<Schedule> due;
        do
        {
            var now = _time.GetUtcNow();
            due = _store.Due(now, BatchSize);
            foreach (var schedule in due)
            {
                retry |= !await RunAsync(schedule, now, cancellationToken).ConfigureAwait(false);
            }
        }
        while (due.Count == BatchSize);

        var wait = _store.NextDue() is { } next ? next - _time.GetUtcNow() : MaxWait;
        wait = wait < TimeSpan.Zero ? TimeSpan.Zero : wait > MaxWait ? MaxWait : wait;
        return retry && wait > RetryDelay ? RetryDelay : wait;
    }

    /// <summary>Decides, records and runs one due schedule; false when its run stays pending (to be retried).</summary>
    private async Task<bool> RunAsync(Schedule schedule, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var due = schedule.NextDue!.Value;
        if (schedule.Timing() is not { } timing)
        {
            // Its time zone is gone from this system: it cannot be evaluated, so it stops, visibly.
            _store.TryBeginRun(schedule.Id, due, null, 0, null);
            LogNoTiming(schedule.Id, LogText.Safe(schedule.TimeZone));
            return true;
        }

        var decision = ScheduleCatchUp.Decide(timing, due, now, _options.CatchUpGrace);
        if (!_store.TryBeginRun(schedule.Id, due, decision.Run, decision.Skipped, decision.Next))
        {
            // Paused, resumed or deleted meanwhile.
            return true;
        }

        if (decision.Skipped > 0)
        {
            _metrics.CountSkipped(decision.Skipped);
            if (_throttle.TryEnter(SkippedSlot, out var suppressed))
            {
                LogSkipped(schedule.Id, decision.Skipped, due, _options.CatchUpGraceSeconds, suppressed);
            }
        }

        return decision.Run is not { } run || await FinishAsync(schedule, run, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stores the commands of the pending run due at <paramref name="due"/>; false when that failed and is to be retried.</summary>
    private async Task<bool> FinishAsync(Schedule schedule, DateTimeOffset due, CancellationToken cancellationToken)
    {
        if (_time.GetUtcNow() - due > _options.CatchUpGrace)
        {
            // Pending across a long outage (or failing for that long): the catch-up policy's bound holds here too.
            _metrics.CountSkipped(1);
            _store.FinishRun(schedule.Id, due, "skipped: not sent within Relay:Schedules:CatchUpGraceSeconds", failed: false, skipped: true);
            return true;
        }

        DispatchResult result;
        try
        {
            result = await _dispatch.SendAsync(schedule, schedule.RunKey(due), cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            if (_throttle.TryEnter(ErrorSlot, out var suppressed))
            {
                LogSendFailed(e, schedule.Id, suppressed);
            }

            return false;
        }

        if (result.Failure is { } failure)
        {
            _metrics.CountFailure(failure);
            _store.FinishRun(schedule.Id, due, "failed: " + Describe(failure), failed: true);
            if (_throttle.TryEnter(FailedSlot, out var suppressed))
            {
                LogRunFailed(schedule.Id, Describe(failure), suppressed);
            }

            return true;
        }

        _metrics.CountRun(result.Commands);
        var outcome = result.DevicesSkipped > 0
            ? $"sent {result.Commands}; {result.DevicesSkipped} device(s) skipped, their queue full"
            : $"sent {result.Commands}";
        _store.FinishRun(schedule.Id, due, outcome, failed: false);
        return true;
    }

    private async Task WaitAsync(TimeSpan wait, CancellationToken stoppingToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        var delay = Task.Delay(wait, _time, stop.Token);
        var woken = _wake.WaitAsync(stop.Token);
        await Task.WhenAny(delay, woken).ConfigureAwait(false);
        await stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(delay, woken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The one that did not finish first.
        }
    }

    internal static string Describe(ScheduleFailure failure) => failure switch
    {
        ScheduleFailure.UnknownDevice => "the device is not registered",
        ScheduleFailure.QueueFull => "the device's queue is full (Relay:Push:MaxQueuedCommandsPerDevice)",
        ScheduleFailure.Quota => "the token's commands would pass Relay:Push:MaxQueuedBytesPerToken",
        ScheduleFailure.TooManyDevices => "more devices carry the tag than Relay:Push:MaxBroadcastDevices",
        _ => "storing the commands failed",
    };

    [LoggerMessage(
        EventId = 7501,
        Level = LogLevel.Information,
        Message = "Schedules: schedule {Id} skipped {Count} run(s) due from {Due:o}: missed, and older than Relay:Schedules:CatchUpGraceSeconds ({Grace} s) "
            + "or beyond the one catch-up run (counted in relay_schedules_runs_skipped_total; {Suppressed} similar lines held back)")]
    private partial void LogSkipped(string id, long count, DateTimeOffset due, int grace, long suppressed);

    [LoggerMessage(
        EventId = 7502,
        Level = LogLevel.Warning,
        Message = "Schedules: a run of schedule {Id} stored no command: {Reason} (counted in relay_schedules_runs_failed_total; {Suppressed} lines held back)")]
    private partial void LogRunFailed(string id, string reason, long suppressed);

    [LoggerMessage(
        EventId = 7503,
        Level = LogLevel.Warning,
        Message = "Schedules: storing the commands of a run of schedule {Id} failed; the run stays pending, retried ({Suppressed} lines held back)")]
    private partial void LogSendFailed(Exception exception, string id, long suppressed);

    [LoggerMessage(EventId = 7504, Level = LogLevel.Error, Message = "Schedules: a pass over the due schedules failed; retried ({Suppressed} lines held back)")]
    private partial void LogPassFailed(Exception exception, long suppressed);

    [LoggerMessage(EventId = 7505, Level = LogLevel.Error, Message = "Schedules: schedule {Id} names time zone {Zone}, unknown here; it will not run again")]
    private partial void LogNoTiming(string id, string zone);
}
