using System.Diagnostics.Metrics;
using System.Globalization;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Push.Webhooks;

/// <summary>
/// Meter <c>Relay.Webhooks</c>: delivery counters per configured receiver (label <c>webhook</c> = its index in
/// Relay:Webhooks). Without a meter factory (unit tests) it still counts, but nothing exports it.
/// </summary>
internal sealed class WebhookMetrics
{
    public const string MeterName = "Relay.Webhooks";

    private readonly long[] _delivered;
    private readonly long[] _failedAttempts;
    private readonly long[] _givenUp;
    private readonly long[] _dropped;

    public WebhookMetrics(int webhooks, IMeterFactory? meterFactory = null)
    {
        _delivered = new long[webhooks];
        _failedAttempts = new long[webhooks];
        _givenUp = new long[webhooks];
        _dropped = new long[webhooks];
        if (meterFactory is null)
        {
            return;
        }

        var indexes = Enumerable.Range(0, webhooks).Select(static i => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.webhook.delivered", () => Labelled(_delivered, indexes, "webhook"), "{event}", "Events a webhook receiver accepted (2xx).");
        meter.CreateObservableCounter("relay.webhook.failed_attempts", () => Labelled(_failedAttempts, indexes, "webhook"), "{request}", "POSTs that failed (error, timeout or non-2xx); retried while attempts remain.");
        meter.CreateObservableCounter("relay.webhook.given_up", () => Labelled(_givenUp, indexes, "webhook"), "{event}", "Events abandoned after Relay:Webhooks:N:MaxAttempts failed tries.");
        meter.CreateObservableCounter("relay.webhook.dropped", () => Labelled(_dropped, indexes, "webhook"), "{event}", "Events dropped because the receiver's queue (QueueCapacity) was full.");
    }

    public long Delivered(int webhook) => Interlocked.Read(ref _delivered[webhook]);

    public long FailedAttempts(int webhook) => Interlocked.Read(ref _failedAttempts[webhook]);

    public long GivenUp(int webhook) => Interlocked.Read(ref _givenUp[webhook]);

    public long Dropped(int webhook) => Interlocked.Read(ref _dropped[webhook]);

    public void CountDelivered(int webhook) => Interlocked.Increment(ref _delivered[webhook]);

    public void CountFailedAttempt(int webhook) => Interlocked.Increment(ref _failedAttempts[webhook]);

    public void CountGivenUp(int webhook) => Interlocked.Increment(ref _givenUp[webhook]);

    /// <summary>Returns the new total, so the caller can log the first drop and then only every so often.</summary>
    public long CountDropped(int webhook) => Interlocked.Increment(ref _dropped[webhook]);
}
