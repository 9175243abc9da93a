using System.Globalization;
using System.Text;

namespace Relay.Server.Push.Webhooks;

/// <summary>Webhook delivery counters per configured receiver (label <c>webhook</c> = its index in Relay:Webhooks).</summary>
internal sealed class WebhookMetrics
{
    private readonly long[] _delivered;
    private readonly long[] _failedAttempts;
    private readonly long[] _givenUp;
    private readonly long[] _dropped;

    public WebhookMetrics(int webhooks)
    {
        _delivered = new long[webhooks];
        _failedAttempts = new long[webhooks];
        _givenUp = new long[webhooks];
        _dropped = new long[webhooks];
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

    public void WritePrometheus(StringBuilder text)
    {
        Family(text, "relay_webhook_delivered_total", "Events a webhook receiver accepted (2xx).", _delivered);
        Family(text, "relay_webhook_failed_attempts_total", "POSTs that failed (error, timeout or non-2xx); retried while attempts remain.", _failedAttempts);
        Family(text, "relay_webhook_given_up_total", "Events abandoned after Relay:Webhooks:N:MaxAttempts failed tries.", _givenUp);
        Family(text, "relay_webhook_dropped_total", "Events dropped because the receiver's queue (QueueCapacity) was full.", _dropped);
    }

    private static void Family(StringBuilder text, string name, string help, long[] values)
    {
        text.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} counter\n");
        for (var i = 0; i < values.Length; i++)
        {
            text.Append(CultureInfo.InvariantCulture, $"{name}{{webhook=\"{i}\"}} {Interlocked.Read(ref values[i])}\n");
        }
    }
}
