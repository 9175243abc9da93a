using System.Net;

namespace Relay.Server.Mqtt;

// In-process hooks into the broker, the "custom store" seam IoT brokers offer, and the one door through
// which features above the broker (push, rendezvous) reach a device. Register observers as
// services.AddSingleton<IMqttMessageObserver/IMqttClientObserver, T>(); any number of each.
//
// Every observer method is called on a connection's read loop, some under the session's lock, so
// implementations must be cheap and must not block, take locks the broker could be waiting on, or call
// back into the broker: copy what they need and queue it (a bounded channel drained by their own task).
// Only OnMessageReceived may make the client wait (its task). An exception is logged and swallowed,
// never ends the connection.

/// <summary>Messages crossing the broker: what clients publish, and acknowledgements of what we sent.</summary>
internal interface IMqttMessageObserver
{
    /// <summary>
    /// A client's PUBLISH was accepted (authorized, routed). <paramref name="message"/> owns its payload.
    /// The client's PUBACK/PUBREC waits for the returned task, so an observer that must keep the message
    /// (a command result) completes it once that is durable; one with nothing to keep returns true at once.
    /// False means "kept nothing": the message is not acknowledged as received (MQTT 5: PUBACK/PUBREC 0x80;
    /// 3.1.1, which has no negative acknowledgement: the connection closes without one), so the client sends
    /// it again. Waiting holds only this client's read loop.
    /// </summary>
    ValueTask<bool> OnMessageReceived(string clientId, StoredMessage message);

    /// <summary>
    /// A QoS 1/2 PUBLISH we sent was acknowledged with success (PUBACK, or PUBCOMP for QoS 2).
    /// <paramref name="tag"/> is what <see cref="IMqttDeviceChannel.PublishToClient"/> was given; null for routed messages.
    /// </summary>
    void OnMessageDelivered(string clientId, string topic, object? tag)
    {
    }
}

/// <summary>Clients' lifecycle: connected, disconnected, subscribed.</summary>
internal interface IMqttClientObserver
{
    /// <summary>A client's CONNECT was accepted and its CONNACK (and resumed messages) written.</summary>
    void OnClientConnected(string clientId, byte protocolVersion, IPEndPoint? remoteEndPoint, DateTimeOffset at);

    /// <summary>The client's connection ended (not called for the old connection of a takeover).</summary>
    void OnClientDisconnected(string clientId, DateTimeOffset at);

    /// <summary>A SUBSCRIBE granted <paramref name="filter"/> (as sent, <c>$share/</c> included).</summary>
    void OnSubscribed(string clientId, string filter);
}

/// <summary>How features above the broker reach one device over its own MQTT session.</summary>
internal interface IMqttDeviceChannel
{
    /// <summary>
    /// Sends <paramref name="message"/> to <paramref name="clientId"/>'s connection if it is online, owned by
    /// the device of that id, and has a (non-shared) subscription matching the topic, at min(message QoS, the
    /// subscription's maximum). False when it did not go (offline, not subscribed, queue full, another
    /// principal's session). The message is not stored and does not outlive the connection: the caller owns
    /// redelivery. Its acknowledgement is reported through <see cref="IMqttMessageObserver.OnMessageDelivered"/>
    /// with <paramref name="tag"/>.
    /// </summary>
    bool PublishToClient(string clientId, StoredMessage message, object? tag);

    /// <summary>Whether <paramref name="clientId"/>'s session belongs to the device of that id (not another principal using its id).</summary>
    bool IsDeviceSession(string clientId);

    /// <summary>Whether the client is connected now.</summary>
    bool IsOnline(string clientId);

    /// <summary>The server address the client's connection arrived at (which of our addresses it sees), or null when offline.</summary>
    IPEndPoint? LocalEndPointOf(string clientId);
}
