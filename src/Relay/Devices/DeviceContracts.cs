using System.Net;

namespace Relay.Server.Devices;

// What the features above the device plane (push, rendezvous, the API) know of devices' connections.
// The MQTT broker implements these; nothing here knows about MQTT, so those features and the broker
// depend on this namespace and never on each other's.

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

    /// <summary>
    /// The device was deleted: ends its live connection (as <see cref="Disconnect"/>), then its session
    /// (subscriptions, queued and in-flight messages, in memory and in storage) instead of keeping it for a
    /// reconnect, and clears its retained messages under <c>devices/{id}/#</c>, so a device registered again
    /// under the id inherits none of it (review L9).
    /// </summary>
    ValueTask ForgetAsync(string deviceId, CancellationToken cancellationToken);
}
