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
    MqttMessageProperties? Properties);
