using Relay.Server.Devices;

namespace Relay.Server.Push;

// Seams of the push plane: the command lifecycle's states and transitions, and who hears about state
// changes (webhooks, later other integrations). Implementations register by interface.

/// <summary>A command's lifecycle state. Final states: Succeeded, Failed, Expired, Canceled.</summary>
internal enum CommandState
{
    Queued,
    Delivered,
    Succeeded,
    Failed,
    Expired,
    Canceled,
}

/// <summary>One state transition of a command, as stored and as announced.</summary>
internal sealed record CommandTransition(
    string CommandId,
    string DeviceId,
    string Name,
    CommandState State,
    DateTimeOffset At,
    string? ResultJson);

/// <summary>
/// Hears about command transitions and device presence changes. Called on the command loop, one call at
/// a time, after the change is durable; must not block (queue and return). Webhooks implement it.
/// </summary>
internal interface IPushEventSink
{
    void OnCommandTransition(CommandTransition transition);

    void OnPresenceChanged(DevicePresence presence);
}
