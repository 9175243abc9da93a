namespace Relay.Server.Mqtt;

/// <summary>MQTT 5 properties of an application message that travel with it and must be stored with it.</summary>
internal sealed record MqttMessageProperties(
    byte? PayloadFormatIndicator,
    string? ContentType,
    string? ResponseTopic,
    ReadOnlyMemory<byte>? CorrelationData,
    IReadOnlyList<KeyValuePair<string, string>>? UserProperties);

/// <summary>An application message at rest (queued, in flight, or retained). Owns its payload.</summary>
internal sealed record StoredMessage(
    string Topic,
    ReadOnlyMemory<byte> Payload,
    byte QoS,
    bool Retain,
    DateTimeOffset? ExpiresAt,
    MqttMessageProperties? Properties)
{
    /// <summary>
    /// For a retained message, the client id that published it: its retained quota holds the message
    /// (review H4). Null for the server's own ($SYS) messages, which count only against the global bounds.
    /// </summary>
    public string? Publisher { get; init; }
}
