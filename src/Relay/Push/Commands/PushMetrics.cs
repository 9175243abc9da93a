using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Push.Commands;

/// <summary>Why a device's result was not acknowledged (review M3): the device sends it again.</summary>
internal enum ResultRefusal
{
    /// <summary>Its commit failed, or the loop stopped before handling it.</summary>
    NotStored,

    /// <summary>The command loop's queue was full.</summary>
    Busy,

    /// <summary>Not committed within the observer's bound.</summary>
    Timeout,
}

/// <summary>The Relay:Push limits that refuse a request.</summary>
internal enum PushLimit
{
    QueuedPerDevice,
    Waiters,
    BroadcastDevices,
    PayloadSize,
    QueuedBytesPerToken,
}

/// <summary>
/// Meter <c>Relay.Push</c>, the command plane: committed transitions by state, refusals by each Relay:Push
/// limit, device results that were not recorded, and broker events the command loop was too far behind to
/// queue. Lock-free slots: any thread counts, the observable instruments read.
/// </summary>
internal sealed class PushMetrics
{
    public const string MeterName = "Relay.Push";

    private static readonly string[] StateNames = ["queued", "delivered", "succeeded", "failed", "expired", "canceled"];
    private static readonly string[] LimitNames = ["queued_per_device", "waiters", "broadcast_devices", "payload_size", "queued_bytes_per_token"];
    private static readonly string[] RefusalNames = ["not_stored", "busy", "timeout"];

    private readonly long[] _transitions = new long[StateNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _refusals = new long[RefusalNames.Length];
    private long _eventsDropped;
    private long _unknownResults;
    private long _duplicateResults;
    private long _pruned;

    /// <summary>Without a meter factory (the command loop's unit tests) it still counts, but nothing exports it.</summary>
    public PushMetrics(IMeterFactory? meterFactory = null)
    {
        if (meterFactory is null)
        {
            return;
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.push.limit_hits", () => Labelled(_limits, LimitNames, "limit"), "{request}", "Requests refused by a Relay:Push limit.");
        meter.CreateObservableCounter("relay.push.command_transitions", () => Labelled(_transitions, StateNames, "state"), "{transition}", "Command state transitions committed, by new state.");
        meter.CreateObservableCounter("relay.push.results_ignored", () => Labelled("reason", ("unknown", UnknownResults), ("duplicate", DuplicateResults)), "{result}", "Device results not recorded: unknown command, or a duplicate for a final one.");
        meter.CreateObservableCounter("relay.push.results_unacknowledged", () => Labelled(_refusals, RefusalNames, "reason"), "{result}", "Device results not acknowledged because they were not stored (the device sends them again), by reason.");
        meter.CreateObservableCounter("relay.push.commands_pruned", () => Pruned, "{command}", "Final commands deleted, with their transitions, after Relay:Push:RetainFinishedDays.");
        meter.CreateObservableCounter("relay.push.events_dropped", () => EventsDropped, "{event}", "Broker events the command loop was too far behind to queue (the sweep recovers them).");
    }

    /// <summary>Broker events lost because the loop was too far behind (the sweep redelivers; nothing is lost for good).</summary>
    public long EventsDropped => Volatile.Read(ref _eventsDropped);

    /// <summary>Results naming a command that does not exist (or belongs to another device), or not a result at all.</summary>
    public long UnknownResults => Volatile.Read(ref _unknownResults);

    /// <summary>Results for a command that was already final: ignored, never recorded twice.</summary>
    public long DuplicateResults => Volatile.Read(ref _duplicateResults);

    /// <summary>Refusals by <paramref name="limit"/>.</summary>
    public long LimitHits(PushLimit limit) => Volatile.Read(ref _limits[(int)limit]);

    /// <summary>Committed (and announced) transitions to <paramref name="state"/>.</summary>
    public long Transitions(CommandState state) => Volatile.Read(ref _transitions[(int)state]);

    public void CountTransition(CommandState state) => Interlocked.Increment(ref _transitions[(int)state]);

    public void CountLimitHit(PushLimit limit) => Interlocked.Increment(ref _limits[(int)limit]);

    /// <summary>Results not acknowledged to their device, by why.</summary>
    public long ResultsNotAcknowledged(ResultRefusal reason) => Volatile.Read(ref _refusals[(int)reason]);

    public void CountResultNotAcknowledged(ResultRefusal reason) => Interlocked.Increment(ref _refusals[(int)reason]);

    /// <summary>Final commands deleted after Relay:Push:RetainFinishedDays.</summary>
    public long Pruned => Volatile.Read(ref _pruned);

    public void CountPruned(long commands) => Interlocked.Add(ref _pruned, commands);

    public void CountEventDropped() => Interlocked.Increment(ref _eventsDropped);

    public void CountUnknownResult() => Interlocked.Increment(ref _unknownResults);

    public void CountDuplicateResult() => Interlocked.Increment(ref _duplicateResults);
}
