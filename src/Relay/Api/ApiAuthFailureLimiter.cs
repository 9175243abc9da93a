using System.Net;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Primitives;

namespace Relay.Server.Api;

/// <summary>
/// Bounds how many requests with a missing or wrong bearer token one source may make
/// (<c>Relay:Api:AuthFailuresPerMinutePerIp</c>, review L3), with the MQTT side's limiter
/// (<see cref="MqttAuthRateLimiter"/>: a token bucket per IPv4 address or IPv6 /64, a bounded LRU table).
/// Each request takes an attempt before its token is checked and a request that authenticates gives it back,
/// so a source that has spent its budget is refused without its token being looked at: guessing costs the
/// guesser a minute per few tries, and concurrent guesses cannot slip past a check made before any of them
/// failed. The check itself is a hash and a table lookup on the request thread, so a legitimate client's
/// parallel requests hold an attempt only for microseconds each.
/// </summary>
/// <remarks>
/// Behind a reverse proxy every request comes from the proxy's address, so one guesser throttles everyone:
/// run the proxy's own limit, or set this to 0 and limit there.
/// </remarks>
internal sealed partial class ApiAuthFailureLimiter
{
    private readonly MqttAuthRateLimiter _limiter;
    private readonly ApiMetrics _metrics;
    private readonly LogThrottle _throttle;
    private readonly ILogger<ApiAuthFailureLimiter> _logger;

    public ApiAuthFailureLimiter(int failuresPerMinute, ApiMetrics metrics, TimeProvider time, ILogger<ApiAuthFailureLimiter> logger)
    {
        _limiter = new MqttAuthRateLimiter(failuresPerMinute, time);
        _metrics = metrics;
        _throttle = new LogThrottle(1, TimeSpan.FromSeconds(10), time);
        _logger = logger;
        FailuresPerMinute = Math.Max(0, failuresPerMinute);

        // One attempt comes back every 60/N seconds.
        RetryAfterSeconds = FailuresPerMinute == 0 ? 0 : (int)Math.Ceiling(60.0 / FailuresPerMinute);
    }

    public int FailuresPerMinute { get; }

    /// <summary>Seconds until a refused source has one attempt again.</summary>
    public int RetryAfterSeconds { get; }

    /// <summary>
    /// Takes an attempt from <paramref name="source"/>'s budget before its token is checked; false when it has
    /// none left (counted, and logged at most every 10 s): answer 429 without checking the token.
    /// </summary>
    public bool TryAcquire(IPAddress? source)
    {
        if (_limiter.TryAcquire(source))
        {
            return true;
        }

        _metrics.CountAuthFailuresLimited();
        if (_throttle.TryEnter(0, out var suppressed))
        {
            LogLimited(source is null ? "(unknown)" : MqttAuthRateLimiter.SourceOf(source).ToString(), FailuresPerMinute, suppressed);
        }

        return false;
    }

    /// <summary>The request authenticated: its attempt goes back.</summary>
    public void Refund(IPAddress? source) => _limiter.Refund(source);

    [LoggerMessage(EventId = 7101, Level = LogLevel.Warning, Message = "API: refused requests from {Source} without checking their token: more than {Limit} missing or wrong bearer tokens a minute (Relay:Api:AuthFailuresPerMinutePerIp); {Suppressed} more refusals since the last such line, all counted in relay_api_rejected_total{{reason=\"auth_failures\"}}")]
    private partial void LogLimited(string source, int limit, long suppressed);
}
