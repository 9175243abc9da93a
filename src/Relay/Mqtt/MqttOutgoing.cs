namespace Relay.Server.Mqtt;

/// <summary>An application message on its way to one session: the shared message plus what this subscriber gets.</summary>
internal sealed class MqttOutgoing(StoredMessage message, byte qos, bool retain, uint[]? subscriptionIdentifiers)
{
    public StoredMessage Message { get; } = message;

    /// <summary>min(published QoS, subscription's maximum) (§3.8.4).</summary>
    public byte QoS { get; } = qos;

    public bool Retain { get; } = retain;

    public uint[]? SubscriptionIdentifiers { get; } = subscriptionIdentifiers;

    /// <summary>Store sequence; 0 for a session that is not persistent.</summary>
    public long Sequence { get; set; }

    public ushort PacketId { get; set; }

    /// <summary>QoS 2: PUBREC received, PUBREL sent; what a resend repeats is PUBREL (§4.3.3).</summary>
    public bool Released { get; set; }

    /// <summary>Sent at least once on some connection: a resend carries DUP=1 [MQTT-4.4.0-1].</summary>
    public bool Sent { get; set; }

    /// <summary>Set by <see cref="IMqttDeviceChannel.PublishToClient"/>: reported back on acknowledgement; such a message is never stored.</summary>
    public object? Tag { get; init; }
}

/// <summary>A will waiting for its delay (MQTT 5.0 §3.1.3.2, Will Delay Interval).</summary>
internal sealed record MqttPendingWill(StoredMessage Message, DateTimeOffset DueAt);
