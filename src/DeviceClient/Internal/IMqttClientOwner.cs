using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// What <see cref="MqttClientCore"/> leaves to the product built on it: what application messages mean, and
/// how faults and state changes reach the host. Called on the core's threads, never under its locks.
/// </summary>
internal interface IMqttClientOwner
{
    /// <summary>The connection state changed; <paramref name="version"/> is set when <paramref name="current"/> is Connected.</summary>
    void OnStateChanged(DeviceConnectionState previous, DeviceConnectionState current, Exception? error, MqttProtocolVersion? version);

    /// <summary>A fault the core handled (connect failures, dropped connections, refused publishes); never thrown into the host.</summary>
    void OnError(string message, Exception? exception);

    /// <summary>A connection is up, subscribed, and its in-flight messages were resent; before the offline queue drains.</summary>
    void OnConnected();

    /// <summary>
    /// An application message from the server (§3.3). <paramref name="publish"/> is a view valid only until the
    /// first await. The owner acknowledges it on <paramref name="connection"/>, now or later (§4.3.2). Returns
    /// a protocol fault to close the connection, or null.
    /// </summary>
    ValueTask<string?> OnPublishAsync(MqttConnection connection, MqttPublish publish);
}
