namespace Relay.Server.Mqtt;

/// <summary>Retained messages, one per topic.</summary>
internal interface IMqttRetainedStore
{
    ValueTask<IReadOnlyList<StoredMessage>> LoadAllAsync(CancellationToken cancellationToken);

    /// <summary>Sets the retained message of <paramref name="message"/>'s topic; an empty payload deletes it [MQTT-3.3.1-6].</summary>
    ValueTask SetAsync(StoredMessage message, CancellationToken cancellationToken);
}
