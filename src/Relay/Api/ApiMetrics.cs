using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Api;

/// <summary>Meter <c>Relay.Api</c>: operator API requests refused before their endpoint ran.</summary>
internal sealed class ApiMetrics
{
    public const string MeterName = "Relay.Api";

    private long _unauthorized;
    private long _forbidden;
    private long _rateLimited;
    private long _bodyTooLarge;
    private long _authFailures;

    public ApiMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        meterFactory.Create(MeterName).CreateObservableCounter(
            "relay.api.rejected",
            () => Labelled(
                "reason",
                ("unauthorized", Interlocked.Read(ref _unauthorized)),
                ("forbidden", Interlocked.Read(ref _forbidden)),
                ("rate_limited", Interlocked.Read(ref _rateLimited)),
                ("body_too_large", Interlocked.Read(ref _bodyTooLarge)),
                ("auth_failures", Interlocked.Read(ref _authFailures))),
            "{request}",
            "API requests refused before the endpoint ran, by reason.");
    }

    public long RateLimited => Interlocked.Read(ref _rateLimited);

    public void CountUnauthorized() => Interlocked.Increment(ref _unauthorized);

    public void CountForbidden() => Interlocked.Increment(ref _forbidden);

    public void CountRateLimited() => Interlocked.Increment(ref _rateLimited);

    public void CountBodyTooLarge() => Interlocked.Increment(ref _bodyTooLarge);

    /// <summary>A request refused unchecked: its source is over Relay:Api:AuthFailuresPerMinutePerIp.</summary>
    public void CountAuthFailuresLimited() => Interlocked.Increment(ref _authFailures);
}
