using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Writes MQTT packets straight into an <see cref="IBufferWriter{T}"/>, computing the remaining length
/// first. Allocation-free. Invalid arguments (QoS 3, a packet over 268,435,455 bytes, ...) throw
/// <see cref="ArgumentException"/>: they are caller bugs, not wire input.
/// </summary>
public static class MqttPacketWriter
{
    /// <summary>CONNACK (§3.2). <paramref name="reasonOrReturnCode"/> is an <see cref="MqttReasonCode"/> (v5) or <see cref="MqttConnectReturnCode"/> (v3.1.1).</summary>
    public static void WriteConnAck(IBufferWriter<byte> writer, MqttProtocolVersion version, bool sessionPresent, byte reasonOrReturnCode, in MqttConnAckProperties properties)
        => throw new NotImplementedException();

    /// <summary>PUBLISH (§3.3) with a sequence payload.</summary>
    public static void WritePublish(IBufferWriter<byte> writer, MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, ReadOnlySequence<byte> payload)
        => throw new NotImplementedException();

    /// <summary>PUBLISH (§3.3) with a span payload.</summary>
    public static void WritePublish(IBufferWriter<byte> writer, MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, ReadOnlySpan<byte> payload)
        => throw new NotImplementedException();

    /// <summary>The whole size of the PUBLISH the matching writer would produce, to check against a Maximum Packet Size first.</summary>
    public static long MeasurePublish(MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, in MqttPublishProperties properties, long payloadLength)
        => throw new NotImplementedException();

    /// <summary>PUBACK/PUBREC/PUBREL/PUBCOMP (§3.4-§3.7). In v5 the reason code is omitted when Success with no properties (§3.4.2.1).</summary>
    public static void WriteAck(IBufferWriter<byte> writer, MqttPacketType type, MqttProtocolVersion version, ushort packetId, MqttReasonCode code, string? reasonString = null)
        => throw new NotImplementedException();

    /// <summary>SUBACK (§3.9): one code per requested filter.</summary>
    public static void WriteSubAck(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<byte> codes, string? reasonString = null)
        => throw new NotImplementedException();

    /// <summary>UNSUBACK (§3.11): v5 carries one code per filter; v3.1.1 has no payload and ignores <paramref name="codes"/>.</summary>
    public static void WriteUnsubAck(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<byte> codes, string? reasonString = null)
        => throw new NotImplementedException();

    /// <summary>PINGRESP (§3.13).</summary>
    public static void WritePingResp(IBufferWriter<byte> writer) => throw new NotImplementedException();

    /// <summary>PINGREQ (§3.12).</summary>
    public static void WritePingReq(IBufferWriter<byte> writer) => throw new NotImplementedException();

    /// <summary>DISCONNECT (§3.14). v3.1.1 has no variable header and ignores everything but the type.</summary>
    public static void WriteDisconnect(IBufferWriter<byte> writer, MqttProtocolVersion version, MqttReasonCode code, string? reasonString = null, string? serverReference = null, uint? sessionExpiry = null)
        => throw new NotImplementedException();

    /// <summary>AUTH (§3.15), MQTT 5 only.</summary>
    public static void WriteAuth(IBufferWriter<byte> writer, MqttReasonCode code, string? authenticationMethod, string? reasonString)
        => throw new NotImplementedException();

    /// <summary>CONNECT (§3.1), client side.</summary>
    public static void WriteConnect(IBufferWriter<byte> writer, in MqttConnectOptions options) => throw new NotImplementedException();

    /// <summary>SUBSCRIBE (§3.8), client side. <paramref name="subscriptionIdentifier"/> 0 = none (v5 only).</summary>
    public static void WriteSubscribe(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<MqttSubscriptionRequest> entries, uint subscriptionIdentifier = 0)
        => throw new NotImplementedException();

    /// <summary>UNSUBSCRIBE (§3.10), client side.</summary>
    public static void WriteUnsubscribe(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<string> filters)
        => throw new NotImplementedException();
}
