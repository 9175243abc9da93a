using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Relay.Server.Primitives;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Events;

/// <summary>
/// Fans live events out to subscribers (the event stream's clients, extension hooks), each through a queue of
/// its own of at most <see cref="EventsOptions.SubscriberQueueLength"/> events. Publishing never waits: a
/// subscriber whose queue is full is cut off (its reader completes with <see cref="RelayEventSubscription.CutOff"/>
/// set), so one slow reader can neither hold up a publisher nor grow memory. Meter <c>Relay.Events</c>.
/// </summary>
internal sealed partial class RelayEventHub : IRelayEvents
{
    public const string MeterName = "Relay.Events";

    private static readonly RelayEventKind[] Kinds = Enum.GetValues<RelayEventKind>();
    private static readonly string[] KindNames = [.. Kinds.Select(static k => k.ToString().ToLowerInvariant())];

    private readonly Lock _gate = new();
    private readonly EventsOptions _options;
    private readonly ILogger _logger;
    private readonly LogThrottle _logThrottle;
    private readonly long[] _published = new long[Kinds.Length];
    private readonly int[] _listening = new int[Kinds.Length];
    private RelayEventSubscription[] _subscribers = [];
    private long _refused;
    private long _cutOff;

    public RelayEventHub(IOptions<EventsOptions> options, IMeterFactory meterFactory, TimeProvider time, ILogger<RelayEventHub> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(meterFactory);
        _options = options.Value;
        _logger = logger;
        _logThrottle = new LogThrottle(2, TimeSpan.FromSeconds(10), time);
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.events.published", () => Labelled(_published, KindNames, "kind"), "{event}", "Live events published, by kind.");
        meter.CreateObservableGauge("relay.events.subscribers", () => Volatile.Read(ref _subscribers).Length, "{subscriber}", "Live event subscribers now.");
        meter.CreateObservableCounter(
            "relay.events.subscribers.ended",
            () => Labelled("reason", ("refused", Interlocked.Read(ref _refused)), ("cut_off", Interlocked.Read(ref _cutOff))),
            "{subscriber}",
            "Subscribers refused (Relay:Events:MaxSubscribers) or cut off for falling Relay:Events:SubscriberQueueLength events behind.");
    }

    public bool HasSubscribers(RelayEventKind kind) => Volatile.Read(ref _listening[(int)kind]) > 0;

    public void Publish(RelayEvent relayEvent)
    {
        ArgumentNullException.ThrowIfNull(relayEvent);
        Interlocked.Increment(ref _published[(int)relayEvent.Kind]);
        foreach (var subscriber in Volatile.Read(ref _subscribers))
        {
            if (subscriber.Wants(relayEvent) && !subscriber.TryWrite(relayEvent))
            {
                CutOff(subscriber);
            }
        }
    }

    /// <summary>
    /// A new subscriber to the <paramref name="kinds"/> that <paramref name="filter"/> (when given) takes; null
    /// when <see cref="EventsOptions.MaxSubscribers"/> are already subscribed (counted and logged). Dispose it to leave.
    /// </summary>
    public RelayEventSubscription? Subscribe(IReadOnlyCollection<RelayEventKind> kinds, Func<RelayEvent, bool>? filter = null)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        lock (_gate)
        {
            if (_subscribers.Length >= _options.MaxSubscribers)
            {
                Interlocked.Increment(ref _refused);
                if (_logThrottle.TryEnter(0, out var suppressed))
                {
                    LogRefused(_logger, _options.MaxSubscribers, suppressed);
                }

                return null;
            }

            var subscription = new RelayEventSubscription(this, kinds, filter, _options.SubscriberQueueLength);
            _subscribers = [.. _subscribers, subscription];
            foreach (var kind in subscription.Kinds)
            {
                _listening[(int)kind]++;
            }

            return subscription;
        }
    }

    /// <summary>Subscribers now (tests read it).</summary>
    public int SubscriberCount => Volatile.Read(ref _subscribers).Length;

    /// <summary>Removes <paramref name="subscription"/>; false when it had already left or been cut off.</summary>
    internal bool Remove(RelayEventSubscription subscription)
    {
        lock (_gate)
        {
            var index = Array.IndexOf(_subscribers, subscription);
            if (index < 0)
            {
                return false;
            }

            _subscribers = [.. _subscribers[..index], .. _subscribers[(index + 1)..]];
            foreach (var kind in subscription.Kinds)
            {
                _listening[(int)kind]--;
            }

            return true;
        }
    }

    private void CutOff(RelayEventSubscription subscriber)
    {
        if (!Remove(subscriber))
        {
            return;
        }

        subscriber.EndCutOff();
        Interlocked.Increment(ref _cutOff);
        if (_logThrottle.TryEnter(1, out var suppressed))
        {
            LogCutOff(_logger, _options.SubscriberQueueLength, suppressed);
        }
    }

    [LoggerMessage(
        EventId = 9001,
        Level = LogLevel.Warning,
        Message = "Events: subscriber refused, {Limit} already subscribed (Relay:Events:MaxSubscribers); {Suppressed} more since the last line")]
    private static partial void LogRefused(ILogger logger, int limit, long suppressed);

    [LoggerMessage(
        EventId = 9002,
        Level = LogLevel.Warning,
        Message = "Events: a subscriber fell {Limit} events behind and was cut off (Relay:Events:SubscriberQueueLength); "
            + "{Suppressed} more since the last line")]
    private static partial void LogCutOff(ILogger logger, int limit, long suppressed);
}

/// <summary>
/// One subscriber's queue. Read <see cref="Reader"/> until it completes; dispose to leave. When the reader
/// completes without a dispose, <see cref="CutOff"/> says whether it was for falling behind.
/// </summary>
internal sealed class RelayEventSubscription : IDisposable
{
    private readonly RelayEventHub _hub;
    private readonly Func<RelayEvent, bool>? _filter;
    private readonly bool[] _kinds = new bool[Enum.GetValues<RelayEventKind>().Length];
    private readonly Channel<RelayEvent> _queue;
    private volatile bool _cutOff;

    internal RelayEventSubscription(RelayEventHub hub, IReadOnlyCollection<RelayEventKind> kinds, Func<RelayEvent, bool>? filter, int capacity)
    {
        _hub = hub;
        _filter = filter;
        foreach (var kind in kinds)
        {
            _kinds[(int)kind] = true;
        }

        Kinds = [.. Enum.GetValues<RelayEventKind>().Where(k => _kinds[(int)k])];

        // Full means cut off (TryWrite false), never wait and never drop silently.
        _queue = Channel.CreateBounded<RelayEvent>(new BoundedChannelOptions(capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    }

    public IReadOnlyList<RelayEventKind> Kinds { get; }

    public ChannelReader<RelayEvent> Reader => _queue.Reader;

    /// <summary>True once the hub cut this subscriber off for falling behind.</summary>
    public bool CutOff => _cutOff;

    public void Dispose()
    {
        _hub.Remove(this);
        _queue.Writer.TryComplete();
    }

    internal bool Wants(RelayEvent relayEvent) => _kinds[(int)relayEvent.Kind] && (_filter is null || _filter(relayEvent));

    internal bool TryWrite(RelayEvent relayEvent) => _queue.Writer.TryWrite(relayEvent);

    internal void EndCutOff()
    {
        _cutOff = true;
        _queue.Writer.TryComplete();
    }
}
