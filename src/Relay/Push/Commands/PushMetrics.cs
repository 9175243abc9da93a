using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Push.Commands;

/// <summary>The Relay:Push limits that refuse a request.</summary>
internal enum PushLimit
{
    QueuedPerDevice,
    Waiters,
    BroadcastDevices,
    PayloadSize,
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
    private static readonly string[] LimitNames = ["queued_per_device", "waiters", "broadcast_devices", "payload_size"];

    private readonly long[] _transitions = new long[StateNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private long _eventsDropped;
    private long _unknownResults;
    private long _duplicateResults;

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

    public void CountEventDropped() => Interlocked.Increment(ref _eventsDropped);

    public void CountUnknownResult() => Interlocked.Increment(ref _unknownResults);

    public void CountDuplicateResult() => Interlocked.Increment(ref _duplicateResults);
}
