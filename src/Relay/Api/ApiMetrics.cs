using System.Globalization;
using System.Text;

namespace Relay.Server.Api;

/// <summary>Counters of the operator API, appended to <c>/metrics</c>.</summary>
internal sealed class ApiMetrics
{
    private long _unauthorized;
    private long _forbidden;
    private long _rateLimited;
    private long _bodyTooLarge;
    private long _authFailures;

    public long RateLimited => Interlocked.Read(ref _rateLimited);

    public void CountUnauthorized() => Interlocked.Increment(ref _unauthorized);

    public void CountForbidden() => Interlocked.Increment(ref _forbidden);

    public void CountRateLimited() => Interlocked.Increment(ref _rateLimited);

    public void CountBodyTooLarge() => Interlocked.Increment(ref _bodyTooLarge);

    /// <summary>A request refused unchecked: its source is over Relay:Api:AuthFailuresPerMinutePerIp.</summary>
    public void CountAuthFailuresLimited() => Interlocked.Increment(ref _authFailures);

    public void WritePrometheus(StringBuilder text)
    {
        text.Append("# HELP relay_api_rejected_total API requests refused before the endpoint ran, by reason.\n")
            .Append("# TYPE relay_api_rejected_total counter\n");
        Line(text, "unauthorized", Interlocked.Read(ref _unauthorized));
        Line(text, "forbidden", Interlocked.Read(ref _forbidden));
        Line(text, "rate_limited", Interlocked.Read(ref _rateLimited));
        Line(text, "body_too_large", Interlocked.Read(ref _bodyTooLarge));
        Line(text, "auth_failures", Interlocked.Read(ref _authFailures));

        static void Line(StringBuilder text, string reason, long value) =>
            text.Append(CultureInfo.InvariantCulture, $"relay_api_rejected_total{{reason=\"{reason}\"}} {value}\n");
    }
}
