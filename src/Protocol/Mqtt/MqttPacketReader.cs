namespace Relay.Protocol.Mqtt;

/// <summary>
/// Decodes the body of a framed packet. Each reader validates the body completely (reserved bits,
/// lengths, QoS 3, packet id 0, UTF-8, properties, trailing bytes) and never throws on malformed input.
/// </summary>
public static class MqttPacketReader
{
    /// <summary>CONNECT (§3.1). The version comes from the packet itself.</summary>
    public static MqttDecodeError ReadConnect(in MqttFrame frame, out MqttConnect packet) => throw new NotImplementedException();

    /// <summary>CONNACK (§3.2), client side.</summary>
    public static MqttDecodeError ReadConnAck(in MqttFrame frame, MqttProtocolVersion version, out MqttConnAck packet) => throw new NotImplementedException();

    /// <summary>PUBLISH (§3.3).</summary>
    public static MqttDecodeError ReadPublish(in MqttFrame frame, MqttProtocolVersion version, out MqttPublish packet) => throw new NotImplementedException();

    /// <summary>PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7).</summary>
    public static MqttDecodeError ReadAck(in MqttFrame frame, MqttProtocolVersion version, out MqttAck packet) => throw new NotImplementedException();

    /// <summary>SUBSCRIBE (§3.8).</summary>
    public static MqttDecodeError ReadSubscribe(in MqttFrame frame, MqttProtocolVersion version, out MqttSubscribe packet) => throw new NotImplementedException();

    /// <summary>SUBACK (§3.9), client side.</summary>
    public static MqttDecodeError ReadSubAck(in MqttFrame frame, MqttProtocolVersion version, out MqttSubAck packet) => throw new NotImplementedException();

    /// <summary>UNSUBSCRIBE (§3.10).</summary>
    public static MqttDecodeError ReadUnsubscribe(in MqttFrame frame, MqttProtocolVersion version, out MqttUnsubscribe packet) => throw new NotImplementedException();

    /// <summary>UNSUBACK (§3.11), client side.</summary>
    public static MqttDecodeError ReadUnsubAck(in MqttFrame frame, MqttProtocolVersion version, out MqttUnsubAck packet) => throw new NotImplementedException();

    /// <summary>DISCONNECT (§3.14).</summary>
    public static MqttDecodeError ReadDisconnect(in MqttFrame frame, MqttProtocolVersion version, out MqttDisconnect packet) => throw new NotImplementedException();

    /// <summary>AUTH (§3.15), MQTT 5 only.</summary>
    public static MqttDecodeError ReadAuth(in MqttFrame frame, out MqttAuth packet) => throw new NotImplementedException();
}
