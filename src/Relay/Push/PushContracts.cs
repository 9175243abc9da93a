using System.Net;

namespace Relay.Push;

// Seams of the push plane (issue 5): the command lifecycle (CommandService, fed by the MQTT broker's
// extension hooks), what the HTTP API asks about devices' presence, and who hears about state changes
// (webhooks, later other integrations). Implementations register by interface.

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

/// <summary>
/// A device's connection as the broker sees it now. <paramref name="Nat"/> is the device's last reported
/// NAT classification (rendezvous <c>nat</c> message, docs/rendezvous.md), null when it never reported one.
/// </summary>
internal sealed record DevicePresence(
    string DeviceId,
    bool Online,
    DateTimeOffset? LastSeen,
    IPEndPoint? RemoteEndPoint,
    byte ProtocolVersion,
    DateTimeOffset? ConnectedSince,
    string? Nat = null);

/// <summary>Presence of devices, answered from the broker's live session table (no I/O).</summary>
internal interface IDevicePresence
{
    /// <summary>The device's presence; offline with LastSeen null when it never connected since start.</summary>
    DevicePresence Get(string deviceId);

    /// <summary>Whether the device is connected now (for "online" filters without building records).</summary>
    bool IsOnline(string deviceId);
}

/// <summary>Ends a device's live connection when an operator deletes it or replaces its secret.</summary>
internal interface IDeviceConnections
{
    /// <summary>Disconnects the device now (MQTT 5: DISCONNECT 0x98 Administrative action); false when it is not connected.</summary>
    bool Disconnect(string deviceId);
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
/// Hears about command transitions and device presence changes. Called after the change is durable;
/// must not block (queue and return). Webhooks implement it.
/// </summary>
internal interface IPushEventSink
{
    void OnCommandTransition(CommandTransition transition);

    void OnPresenceChanged(DevicePresence presence);
}
