namespace Relay.Server.Events;

/// <summary><c>Relay:Events</c>: the live event stream's bounds.</summary>
public sealed class EventsOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Events";

    /// <summary>Subscribers at once (event-stream clients, hooks); one more is refused.</summary>
    public int MaxSubscribers { get; set; } = 256;

    /// <summary>
    /// Events one subscriber may have waiting. A subscriber that falls this far behind is cut off (its stream
    /// ends and it is counted) rather than let grow the server's memory; it reconnects and reads on.
    /// </summary>
    public int SubscriberQueueLength { get; set; } = 1024;

    internal void Validate(List<string> errors)
    {
        if (MaxSubscribers is < 1 or > 100_000)
        {
            errors.Add($"Relay:Events:MaxSubscribers: must be 1..100000 (was {MaxSubscribers})");
        }

        if (SubscriberQueueLength is < 16 or > 1_000_000)
        {
            errors.Add($"Relay:Events:SubscriberQueueLength: must be 16..1000000 (was {SubscriberQueueLength})");
        }
    }
}
