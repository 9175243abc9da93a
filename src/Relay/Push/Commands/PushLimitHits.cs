using Relay.Server.Primitives;

namespace Relay.Server.Push.Commands;

/// <summary>
/// Where a refusal by one of the Relay:Push limits is recorded: counted in <see cref="PushMetrics"/> every
/// time, logged at most once per 10 s per limit, so a client hammering a full queue cannot flood the log.
/// </summary>
internal sealed partial class PushLimitHits
{
    private static readonly string[] LimitKeys = ["Relay:Push:MaxQueuedCommandsPerDevice", "Relay:Push:MaxWaiters", "Relay:Push:MaxBroadcastDevices", "Relay:Push:MaxPayloadBytes", "Relay:Push:MaxQueuedBytesPerToken"];

    private readonly PushMetrics _metrics;
    private readonly LogThrottle _throttle;
    private readonly ILogger<PushLimitHits> _logger;

    public PushLimitHits(PushMetrics metrics, TimeProvider time, ILogger<PushLimitHits> logger)
    {
        _metrics = metrics;
        _throttle = new LogThrottle(LimitKeys.Length, TimeSpan.FromSeconds(10), time);
        _logger = logger;
    }

    /// <summary>Records a refusal by <paramref name="limit"/>; <paramref name="subject"/> (a device, command, tag, token id or path) goes into the sampled log line.</summary>
    public void Record(PushLimit limit, string subject)
    {
        _metrics.CountLimitHit(limit);

        // The count of lines held back is not logged: the metric has every refusal.
        if (_throttle.TryEnter((int)limit, out _))
        {
            LogLimitHit(LimitKeys[(int)limit], LogText.Safe(subject));
        }
    }

    [LoggerMessage(EventId = 7010, Level = LogLevel.Warning, Message = "Push: refused by {Key} ({Subject}); further refusals by it are counted in relay_push_limit_hits_total and logged at most every 10 s")]
    private partial void LogLimitHit(string key, string subject);
}
