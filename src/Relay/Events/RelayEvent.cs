namespace Relay.Server.Events;

/// <summary>What a live event is about; the <c>type</c> filter of <c>GET /v1/events</c> uses these names in lower case.</summary>
public enum RelayEventKind
{
    /// <summary>A device connected or disconnected.</summary>
    Presence,

    /// <summary>A device's readings were stored.</summary>
    Telemetry,

    /// <summary>A command changed state.</summary>
    Command,

    /// <summary>A rule fired.</summary>
    Rule,

    /// <summary>A device's desired or reported state changed.</summary>
    Twin,
}

/// <summary>
/// One live event: its kind, the device it concerns (null when it concerns none), when it happened, and its
/// data as one UTF-8 JSON object. Immutable once published: every subscriber gets the same instance.
/// </summary>
internal sealed record RelayEvent(RelayEventKind Kind, string? DeviceId, DateTimeOffset At, ReadOnlyMemory<byte> Data);

/// <summary>Where features publish live events (presence, telemetry, command transitions, rule firings, twin changes).</summary>
internal interface IRelayEvents
{
    /// <summary>
    /// Whether anyone listens for <paramref name="kind"/> now: a publisher on a hot path checks this before it
    /// builds the event's JSON.
    /// </summary>
    bool HasSubscribers(RelayEventKind kind);

    /// <summary>Hands the event to every subscriber whose filter takes it. Never blocks and never throws for a subscriber's sake.</summary>
    void Publish(RelayEvent relayEvent);
}
