namespace Relay.Server.Push.Webhooks;

/// <summary>One entry of <c>Relay:Webhooks</c> (<c>Relay:Webhooks:0:Url</c>, <c>:Secret</c>, <c>:Events</c>, ...).</summary>
public sealed class WebhookOptions
{
    /// <summary>Configuration section: a list, one entry per receiver.</summary>
    public const string SectionName = "Relay:Webhooks";

    /// <summary>Event kinds: command state changes and device presence changes.</summary>
    public const string CommandEvents = "command";

    /// <inheritdoc cref="CommandEvents"/>
    public const string PresenceEvents = "presence";

    /// <summary>Absolute http or https URL that receives the POSTs.</summary>
    public string Url { get; set; } = string.Empty;

    /// <summary>HMAC-SHA256 key for <c>X-Relay-Signature</c>; share it with the receiver only.</summary>
    public string Secret { get; set; } = string.Empty;

    /// <summary><c>command</c>, <c>presence</c> or both; empty means both.</summary>
    public List<string> Events { get; set; } = [];

    /// <summary>Tries per event, first included, before it is given up (and counted).</summary>
    public int MaxAttempts { get; set; } = 6;

    /// <summary>Wait before the first retry; doubles each retry, capped at <see cref="MaxBackoffSeconds"/>.</summary>
    public int InitialBackoffMilliseconds { get; set; } = 1000;

    /// <summary>Longest wait between two tries.</summary>
    public int MaxBackoffSeconds { get; set; } = 300;

    /// <summary>Time allowed for one POST, connect to response.</summary>
    public int TimeoutSeconds { get; set; } = 10;

    /// <summary>Events waiting for this receiver; beyond it new events are dropped and counted.</summary>
    public int QueueCapacity { get; set; } = 10_000;

    internal bool Wants(string kind) => Events.Count == 0 || Events.Contains(kind, StringComparer.OrdinalIgnoreCase);
}
