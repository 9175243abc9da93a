using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Schedules;

/// <summary>Why a schedule's run stored no command.</summary>
internal enum ScheduleFailure
{
    /// <summary>The schedule's device is not registered (any more).</summary>
    UnknownDevice,

    /// <summary>The device's queue is full (Relay:Push:MaxQueuedCommandsPerDevice).</summary>
    QueueFull,

    /// <summary>The schedule's token would pass Relay:Push:MaxQueuedBytesPerToken.</summary>
    Quota,

    /// <summary>More devices carry the tag than Relay:Push:MaxBroadcastDevices.</summary>
    TooManyDevices,

    /// <summary>Storing the commands kept failing until the run was older than the grace window.</summary>
    Error,
}

/// <summary>The Relay:Schedules limits that refuse a request.</summary>
internal enum ScheduleLimit
{
    Schedules,
    PerTarget,
    MinInterval,
}

/// <summary>
/// Meter <c>Relay.Schedules</c>: runs that stored their commands, the commands they stored, occurrences the
/// catch-up policy skipped, runs that failed by reason, and requests refused by a Relay:Schedules limit.
/// </summary>
internal sealed class ScheduleMetrics
{
    public const string MeterName = "Relay.Schedules";

    private static readonly string[] FailureNames = ["unknown_device", "queue_full", "quota", "too_many_devices", "error"];
    private static readonly string[] LimitNames = ["schedules", "per_target", "min_interval"];

    private readonly long[] _failures = new long[FailureNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private long _runs;
    private long _commands;
    private long _skipped;

    /// <summary>Without a meter factory (unit tests) it still counts, but nothing exports it.</summary>
    public ScheduleMetrics(IMeterFactory? meterFactory = null)
    {
        if (meterFactory is null)
        {
            return;
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.schedules.runs", () => Runs, "{run}", "Schedule runs that stored their commands.");
        meter.CreateObservableCounter("relay.schedules.commands", () => Commands, "{command}", "Commands stored by schedule runs.");
        const string SkippedHelp = "Occurrences skipped by the catch-up policy (missed while down, beyond one run within Relay:Schedules:CatchUpGraceSeconds).";
        meter.CreateObservableCounter("relay.schedules.runs_skipped", () => Skipped, "{run}", SkippedHelp);
        meter.CreateObservableCounter("relay.schedules.runs_failed", () => Labelled(_failures, FailureNames, "reason"), "{run}", "Runs that stored nothing.");
        meter.CreateObservableCounter("relay.schedules.limit_hits", () => Labelled(_limits, LimitNames, "limit"), "{request}", "Refused by a limit.");
    }

    public long Runs => Volatile.Read(ref _runs);

    public long Commands => Volatile.Read(ref _commands);

    public long Skipped => Volatile.Read(ref _skipped);

    public long Failures(ScheduleFailure reason) => Volatile.Read(ref _failures[(int)reason]);

    public long LimitHits(ScheduleLimit limit) => Volatile.Read(ref _limits[(int)limit]);

    public void CountRun(int commands)
    {
        Interlocked.Increment(ref _runs);
        Interlocked.Add(ref _commands, commands);
    }

    public void CountSkipped(long occurrences) => Interlocked.Add(ref _skipped, occurrences);

    public void CountFailure(ScheduleFailure reason) => Interlocked.Increment(ref _failures[(int)reason]);

    public void CountLimitHit(ScheduleLimit limit) => Interlocked.Increment(ref _limits[(int)limit]);
}
