using System.Diagnostics.Metrics;

namespace Relay.Rendezvous.Introductions;

/// <summary>Refusals by a <c>Relay:Rendezvous</c> limit.</summary>
internal enum RendezvousLimit
{
    IntroductionsPerMinute,
    PendingSessions,
    EventQueue,

    /// <summary>A device's share of the event queue (<c>MaxQueuedMessagesPerDevice</c>): one device cannot crowd out the fleet.</summary>
    DeviceQueue,

    /// <summary>A signalling message over <see cref="RendezvousMessageReader.MaxMessageBytes"/>, dropped before it is queued.</summary>
    MessageSize,

    /// <summary>TURN credential requests per device per minute (<c>MaxCredentialsPerMinute</c>).</summary>
    CredentialsPerMinute,

    /// <summary>Candidates dropped because no peer should probe them (loopback, multicast, link-local, ...).</summary>
    Candidates,
}

/// <summary>What became of an introduction.</summary>
internal enum IntroductionOutcome
{
    /// <summary>The offer went to the peer.</summary>
    Offered,

    /// <summary>The peer answered: answer and start went out.</summary>
    Answered,

    Rejected,
    Timeout,

    /// <summary>The peer was not reachable for the offer, or the requester for the answer.</summary>
    Offline,
}

/// <summary>
/// Meter <c>Relay.Rendezvous</c>: signalling counters kept as fixed slot arrays (every label set is bounded:
/// message types, error codes, NAT pairs × paths), written by the signalling loop and read by the observable
/// instruments; the time to a direct path is a histogram.
/// </summary>
internal sealed class RendezvousMetrics
{
    public const string MeterName = "Relay.Rendezvous";

    public static readonly string[] LimitNames = ["introductions_per_minute", "pending_sessions", "event_queue", "device_queue", "message_size", "credentials_per_minute", "candidates"];
    public static readonly string[] Paths = ["direct", "relayed", "failed"];

    private static readonly string[] MessageTypes = ["turn-credentials-request", "nat", "connect", "answer", "reject", "result", "invalid"];
    private static readonly string[] ErrorCodes = ["forbidden", "offline", "unknown-peer", "rate-limited", "timeout", "rejected", "bad-request", "unavailable"];
    private static readonly string[] OutcomeNames = ["offered", "answered", "rejected", "timeout", "offline"];

    /// <summary>Upper bounds (seconds) of the time-to-direct histogram's buckets; +Inf follows.</summary>
    private static readonly double[] TimeToDirectBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private readonly long[] _received = new long[MessageTypes.Length];
    private readonly long[] _errors = new long[ErrorCodes.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _outcomes = new long[OutcomeNames.Length];
    private readonly long[] _attempts = new long[NatKinds.PairCount];
    private readonly long[] _results = new long[NatKinds.PairCount * Paths.Length];
    private readonly Histogram<double> _timeToDirect;
    private long _credentialsMinted;
    private long _resultsUnknown;
    private long _resultsDuplicate;
    private long _pending;

    public RendezvousMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.rendezvous.messages", () => Labelled(_received, MessageTypes, "type"), "{message}", "Rendezvous messages received from devices, by type (invalid: unparseable or unknown).");
        meter.CreateObservableCounter("relay.rendezvous.errors", () => Labelled(_errors, ErrorCodes, "code"), "{message}", "Rendezvous error messages sent to devices, by code.");
        meter.CreateObservableCounter("relay.rendezvous.limit_hits", () => Labelled(_limits, LimitNames, "limit"), "{request}", "Rendezvous requests refused or dropped by a limit.");
        meter.CreateObservableCounter("relay.rendezvous.introductions", () => Labelled(_outcomes, OutcomeNames, "outcome"), "{introduction}", "What became of introductions: offered to the peer, answered, rejected, timed out, or a side offline.");
        meter.CreateObservableGauge("relay.rendezvous.pending_sessions", () => Pending, "{session}", "Offers waiting for their answer (bounded by Relay:Rendezvous:MaxPendingSessions).");
        meter.CreateObservableCounter("relay.rendezvous.turn_credentials_minted", () => CredentialsMintedCount, "{credential}", "TURN credentials minted for devices over MQTT.");
        meter.CreateObservableCounter("relay.rendezvous.attempts", ObserveAttempts, "{introduction}", "Introductions whose connectivity checks started (answer and start sent), by the two devices' NAT types (sorted).");
        meter.CreateObservableCounter("relay.rendezvous.results", ObserveResults, "{session}", "Sessions' reported outcome (first report per session), by NAT pair and path.");
        meter.CreateObservableCounter("relay.rendezvous.fallbacks", ObserveFallbacks, "{session}", "Sessions that ended on the TURN relay (results with path relayed).");
        meter.CreateObservableCounter("relay.rendezvous.results_ignored", () => new Measurement<long>[] { new(ResultsUnknown, new KeyValuePair<string, object?>("reason", "unknown")), new(ResultsDuplicate, new KeyValuePair<string, object?>("reason", "duplicate")) }, "{result}", "Results not counted: unknown session (or past its window), or the second side's report.");
        _timeToDirect = meter.CreateHistogram(
            "relay.rendezvous.time_to_direct",
            "s",
            "Time from start to the first successful direct check, as reported by devices.",
            tags: null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = TimeToDirectBuckets });
    }

    public long Pending
    {
        get => Volatile.Read(ref _pending);
        set => Volatile.Write(ref _pending, value);
    }

    public long CredentialsMintedCount => Volatile.Read(ref _credentialsMinted);

    public long ResultsUnknown => Volatile.Read(ref _resultsUnknown);

    public long ResultsDuplicate => Volatile.Read(ref _resultsDuplicate);

    public void Received(string? type)
    {
        var i = Array.IndexOf(MessageTypes, type);
        Interlocked.Increment(ref _received[i < 0 ? MessageTypes.Length - 1 : i]);
    }

    public long ReceivedCount(string type) => Volatile.Read(ref _received[Array.IndexOf(MessageTypes, type)]);

    public void ErrorSent(string code)
    {
        var i = Array.IndexOf(ErrorCodes, code);
        if (i >= 0)
        {
            Interlocked.Increment(ref _errors[i]);
        }
    }

    public long ErrorsSent(string code) => Volatile.Read(ref _errors[Array.IndexOf(ErrorCodes, code)]);

    public void LimitHit(RendezvousLimit limit) => Interlocked.Increment(ref _limits[(int)limit]);

    public long LimitHits(RendezvousLimit limit) => Volatile.Read(ref _limits[(int)limit]);

    public void Outcome(IntroductionOutcome outcome) => Interlocked.Increment(ref _outcomes[(int)outcome]);

    public long Outcomes(IntroductionOutcome outcome) => Volatile.Read(ref _outcomes[(int)outcome]);

    /// <summary>Checks started (answer + start sent) for a NAT pair.</summary>
    public void Attempt(int pairIndex) => Interlocked.Increment(ref _attempts[pairIndex]);

    public long Attempts(int pairIndex) => Volatile.Read(ref _attempts[pairIndex]);

    /// <summary>A session's reported outcome; <paramref name="millisecondsToDirect"/> feeds the histogram for direct paths.</summary>
    public void Result(int pairIndex, int pathIndex, long? millisecondsToDirect)
    {
        Interlocked.Increment(ref _results[(pairIndex * Paths.Length) + pathIndex]);
        if (pathIndex == 0 && millisecondsToDirect is { } ms)
        {
            _timeToDirect.Record(ms / 1000.0);
        }
    }

    public long Results(int pairIndex, int pathIndex) => Volatile.Read(ref _results[(pairIndex * Paths.Length) + pathIndex]);

    public void CredentialsMinted() => Interlocked.Increment(ref _credentialsMinted);

    public void ResultIgnored(bool duplicate) => Interlocked.Increment(ref duplicate ? ref _resultsDuplicate : ref _resultsUnknown);

    private static Measurement<long>[] Labelled(long[] slots, string[] names, string tag)
    {
        var measurements = new Measurement<long>[names.Length];
        for (var i = 0; i < names.Length; i++)
        {
            measurements[i] = new Measurement<long>(Volatile.Read(ref slots[i]), new KeyValuePair<string, object?>(tag, names[i]));
        }

        return measurements;
    }

    // Pairs never seen are left out: 36 pairs x 3 paths of zeros would drown the rest.
    private IEnumerable<Measurement<long>> ObserveAttempts()
    {
        for (var pair = 0; pair < NatKinds.PairCount; pair++)
        {
            if (Attempts(pair) is > 0 and var count)
            {
                yield return new Measurement<long>(count, new KeyValuePair<string, object?>("pair", NatKinds.PairLabel(pair)));
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveResults()
    {
        for (var pair = 0; pair < NatKinds.PairCount; pair++)
        {
            for (var path = 0; path < Paths.Length; path++)
            {
                if (Results(pair, path) is > 0 and var count)
                {
                    yield return new Measurement<long>(count, new("pair", NatKinds.PairLabel(pair)), new("path", Paths[path]));
                }
            }
        }
    }

    private long ObserveFallbacks()
    {
        long fallbacks = 0;
        for (var pair = 0; pair < NatKinds.PairCount; pair++)
        {
            fallbacks += Results(pair, 1);
        }

        return fallbacks;
    }
}
