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
/// Counters for rendezvous signalling, kept as fixed slot arrays (every label set is bounded: message
/// types, error codes, NAT pairs × paths), written by the signalling loop and read by a scrape.
/// </summary>
internal sealed class RendezvousMetrics
{
    public static readonly string[] MessageTypes = ["turn-credentials-request", "nat", "connect", "answer", "reject", "result", "invalid"];
    public static readonly string[] ErrorCodes = ["forbidden", "offline", "unknown-peer", "rate-limited", "timeout", "rejected", "bad-request", "unavailable"];
    public static readonly string[] LimitNames = ["introductions_per_minute", "pending_sessions", "event_queue", "device_queue", "message_size", "credentials_per_minute", "candidates"];
    public static readonly string[] OutcomeNames = ["offered", "answered", "rejected", "timeout", "offline"];
    public static readonly string[] Paths = ["direct", "relayed", "failed"];

    /// <summary>Upper bounds (milliseconds) of the time-to-direct histogram's buckets; +Inf follows.</summary>
    public static readonly long[] TimeToDirectBucketsMs = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000];

    private readonly long[] _received = new long[MessageTypes.Length];
    private readonly long[] _errors = new long[ErrorCodes.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _outcomes = new long[OutcomeNames.Length];
    private readonly long[] _attempts = new long[NatKinds.PairCount];
    private readonly long[] _results = new long[NatKinds.PairCount * Paths.Length];
    private readonly long[] _timeToDirect = new long[TimeToDirectBucketsMs.Length + 1];
    private long _timeToDirectSumMs;
    private long _credentialsMinted;
    private long _resultsUnknown;
    private long _resultsDuplicate;
    private long _pending;

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

    /// <summary>A session's reported outcome; <paramref name="millisecondsToDirect"/> feeds the histogram for direct paths.</summary>
    public void Result(int pairIndex, int pathIndex, long? millisecondsToDirect)
    {
        Interlocked.Increment(ref _results[(pairIndex * Paths.Length) + pathIndex]);
        if (pathIndex == 0 && millisecondsToDirect is { } ms)
        {
            var bucket = 0;
            while (bucket < TimeToDirectBucketsMs.Length && ms > TimeToDirectBucketsMs[bucket])
            {
                bucket++;
            }

            Interlocked.Increment(ref _timeToDirect[bucket]);
            Interlocked.Add(ref _timeToDirectSumMs, ms);
        }
    }

    public void CredentialsMinted() => Interlocked.Increment(ref _credentialsMinted);

    public void ResultIgnored(bool duplicate) => Interlocked.Increment(ref duplicate ? ref _resultsDuplicate : ref _resultsUnknown);

    public long Pending
    {
        get => Volatile.Read(ref _pending);
        set => Volatile.Write(ref _pending, value);
    }

    public long CredentialsMintedCount => Volatile.Read(ref _credentialsMinted);

    public long ResultsUnknown => Volatile.Read(ref _resultsUnknown);

    public long ResultsDuplicate => Volatile.Read(ref _resultsDuplicate);

    public long TimeToDirectSumMs => Volatile.Read(ref _timeToDirectSumMs);

    public long[] ReceivedSlots => _received;

    public long[] ErrorSlots => _errors;

    public long[] LimitSlots => _limits;

    public long[] OutcomeSlots => _outcomes;

    /// <summary>Per-bucket (not cumulative) counts of the time-to-direct histogram; the last is above every bound.</summary>
    public long[] TimeToDirectSlots => _timeToDirect;

    public long Attempts(int pairIndex) => Volatile.Read(ref _attempts[pairIndex]);

    public long Results(int pairIndex, int pathIndex) => Volatile.Read(ref _results[(pairIndex * Paths.Length) + pathIndex]);
}
