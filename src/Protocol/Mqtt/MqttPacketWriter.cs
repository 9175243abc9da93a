using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Writes MQTT packets straight into an <see cref="IBufferWriter{T}"/> (a PipeWriter), computing the
/// Remaining Length first. Allocation-free. Arguments that cannot be encoded (QoS 3, a missing Packet
/// Identifier, a string over 65,535 bytes, a packet over 268,435,455 bytes, …) throw
/// <see cref="ArgumentException"/>: they are caller bugs, not wire input, and nothing is written for them.
/// Where the peer set a Maximum Packet Size, measure first (<see cref="MeasurePublish(MqttProtocolVersion, ReadOnlySpan{byte}, byte, in MqttPublishProperties, long)"/>).
/// </summary>
public static partial class MqttPacketWriter
{
    /// <summary>
    /// CONNACK (§3.2): Connect Acknowledge Flags (Session Present in bit 0), the Reason Code (v5) or
    /// Return Code (v3.1.1), then (v5) Properties. A refusal carries Session Present 0 (v5 [MQTT-3.2.2-6],
    /// v3.1.1 [MQTT-3.2.2-4]), enforced here.
    /// </summary>
    public static void WriteConnAck(IBufferWriter<byte> writer, MqttProtocolVersion version, bool sessionPresent, byte reasonOrReturnCode, in MqttConnAckProperties properties)
    {
        sessionPresent &= reasonOrReturnCode == 0;
        var v5 = version == MqttProtocolVersion.V500;
        var propertiesLength = v5 ? MeasureConnAckProperties(properties) : 0;
        var remaining = 2 + (v5 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0);
        var total = MqttSpanWriter.PacketSize(remaining);

        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(MqttPacketType.ConnAck, 0, remaining);
        w.Byte(sessionPresent ? (byte)1 : (byte)0);
        w.Byte(reasonOrReturnCode);
        if (v5)
        {
            w.VariableByteInteger(propertiesLength);
            WriteConnAckProperties(ref w, properties);
        }

        writer.Advance(total);
    }

    /// <summary>
    /// PUBLISH (§3.3) with a sequence payload (e.g. a view of the publisher's packet): fixed-header flags
    /// DUP, QoS, RETAIN; Topic Name; Packet Identifier (QoS 1 and 2 only); (v5) Properties; payload.
    /// </summary>
    public static void WritePublish(IBufferWriter<byte> writer, MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, ReadOnlySequence<byte> payload)
    {
        WritePublishHeader(writer, version, topicUtf8, qos, retain, dup, packetId, properties, payload.Length);
        foreach (var segment in payload)
        {
            CopyChunked(writer, segment.Span);
        }
    }

    /// <summary>PUBLISH (§3.3) with a span payload; see the sequence overload.</summary>
    public static void WritePublish(IBufferWriter<byte> writer, MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, ReadOnlySpan<byte> payload)
    {
        WritePublishHeader(writer, version, topicUtf8, qos, retain, dup, packetId, properties, payload.Length);
        CopyChunked(writer, payload);
    }

    /// <summary>
    /// The whole size of the PUBLISH the matching writer would produce, to compare with the receiver's
    /// Maximum Packet Size before writing ([MQTT-3.1.2-24]: a server MUST NOT send a larger packet).
    /// </summary>
    /// <remarks>Returns a size even beyond what a Remaining Length can express (the writer would throw), so a caller can compare without a try.</remarks>
    public static long MeasurePublish(MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, in MqttPublishProperties properties, long payloadLength)
    {
        var remaining = MeasurePublishRemaining(version, topicUtf8.Length, qos, properties, payloadLength, out _);
        var lengthBytes = remaining > MqttFrameReader.MaxRemainingLength ? 4 : MqttWire.VariableByteIntegerSize((int)remaining);
        return 1 + lengthBytes + remaining;
    }

    /// <summary>The size <see cref="WritePublish(IBufferWriter{byte}, MqttProtocolVersion, ReadOnlySpan{byte}, byte, bool, bool, ushort, in MqttPublishProperties, ReadOnlySequence{byte})"/> would write.</summary>
    public static long MeasurePublish(MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, ReadOnlySequence<byte> payload)
        => MeasurePublish(version, topicUtf8, qos, properties, payload.Length);

    /// <summary>The size <see cref="WritePublish(IBufferWriter{byte}, MqttProtocolVersion, ReadOnlySpan{byte}, byte, bool, bool, ushort, in MqttPublishProperties, ReadOnlySpan{byte})"/> would write.</summary>
    public static long MeasurePublish(MqttProtocolVersion version, ReadOnlySpan<byte> topicUtf8, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, ReadOnlySpan<byte> payload)
        => MeasurePublish(version, topicUtf8, qos, properties, payload.Length);

    /// <summary>
    /// PUBACK/PUBREC/PUBREL/PUBCOMP (§3.4-§3.7): Packet Identifier, then in v5 the Reason Code and
    /// Properties, both omitted when Success with no properties (§3.4.2.1), and the Property Length
    /// omitted when there are no properties (§3.4.2.2.1). PUBREL carries flags 0010 (§2.1.3).
    /// </summary>
    public static void WriteAck(IBufferWriter<byte> writer, MqttPacketType type, MqttProtocolVersion version, ushort packetId, MqttReasonCode code, string? reasonString = null)
    {
        if (type is not (MqttPacketType.PubAck or MqttPacketType.PubRec or MqttPacketType.PubRel or MqttPacketType.PubComp))
        {
            MqttSpanWriter.ThrowArgument("Not a PUBACK, PUBREC, PUBREL or PUBCOMP.", nameof(type));
        }

        RequirePacketId(packetId);
        var v5 = version == MqttProtocolVersion.V500;
        var propertiesLength = v5 && reasonString is not null ? 1 + MqttSpanWriter.StringSize(reasonString) : 0;
        var remaining = 2;
        if (v5 && (code != MqttReasonCode.Success || propertiesLength > 0))
        {
            remaining += 1 + (propertiesLength > 0 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0);
        }

        var total = MqttSpanWriter.PacketSize(remaining);
        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(type, type == MqttPacketType.PubRel ? (byte)0b0010 : (byte)0, remaining);
        w.UInt16(packetId);
        if (remaining > 2)
        {
            w.Byte((byte)code);
            if (propertiesLength > 0)
            {
                w.VariableByteInteger(propertiesLength);
                w.StringProperty(0x1F, reasonString!);
            }
        }

        writer.Advance(total);
    }

    /// <summary>SUBACK (§3.9): Packet Identifier, (v5) Properties, one code per requested filter, in order ([MQTT-3.8.4-6]).</summary>
    public static void WriteSubAck(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<byte> codes, string? reasonString = null)
    {
        if (codes.IsEmpty)
        {
            MqttSpanWriter.ThrowArgument("A SUBACK carries one code per topic filter of the SUBSCRIBE, so at least one.", nameof(codes));
        }

        WriteIdPropertiesCodes(writer, MqttPacketType.SubAck, version, packetId, codes, reasonString);
    }

    /// <summary>UNSUBACK (§3.11): v5 carries Properties and one code per filter; v3.1.1 has no payload and ignores <paramref name="codes"/>.</summary>
    public static void WriteUnsubAck(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<byte> codes, string? reasonString = null)
    {
        if (version == MqttProtocolVersion.V500 && codes.IsEmpty)
        {
            MqttSpanWriter.ThrowArgument("A v5 UNSUBACK carries one code per topic filter of the UNSUBSCRIBE, so at least one.", nameof(codes));
        }

        WriteIdPropertiesCodes(writer, MqttPacketType.UnsubAck, version, packetId, version == MqttProtocolVersion.V500 ? codes : default, reasonString);
    }

    /// <summary>PINGRESP (§3.13): two bytes, D0 00.</summary>
    public static void WritePingResp(IBufferWriter<byte> writer) => WriteEmpty(writer, MqttPacketType.PingResp);

    /// <summary>PINGREQ (§3.12): two bytes, C0 00.</summary>
    public static void WritePingReq(IBufferWriter<byte> writer) => WriteEmpty(writer, MqttPacketType.PingReq);

    /// <summary>
    /// DISCONNECT (§3.14). v3.1.1: E0 00, everything else ignored. v5: Reason Code and Properties, both
    /// omitted for a normal disconnection without properties (§3.14.2.1).
    /// </summary>
    public static void WriteDisconnect(IBufferWriter<byte> writer, MqttProtocolVersion version, MqttReasonCode code, string? reasonString = null, string? serverReference = null, uint? sessionExpiry = null)
    {
        if (version != MqttProtocolVersion.V500)
        {
            WriteEmpty(writer, MqttPacketType.Disconnect);
            return;
        }

        var propertiesLength = (sessionExpiry.HasValue ? 5 : 0)
            + (reasonString is null ? 0 : 1 + MqttSpanWriter.StringSize(reasonString))
            + (serverReference is null ? 0 : 1 + MqttSpanWriter.StringSize(serverReference));
        WriteReasonAndProperties(writer, MqttPacketType.Disconnect, code, propertiesLength, sessionExpiry, null, reasonString, serverReference);
    }

    /// <summary>AUTH (§3.15), MQTT 5 only: Reason Code and Properties (Authentication Method, Reason String).</summary>
    public static void WriteAuth(IBufferWriter<byte> writer, MqttReasonCode code, string? authenticationMethod, string? reasonString)
    {
        var propertiesLength = (authenticationMethod is null ? 0 : 1 + MqttSpanWriter.StringSize(authenticationMethod))
            + (reasonString is null ? 0 : 1 + MqttSpanWriter.StringSize(reasonString));
        WriteReasonAndProperties(writer, MqttPacketType.Auth, code, propertiesLength, null, authenticationMethod, reasonString, null);
    }

    private static void WriteReasonAndProperties(IBufferWriter<byte> writer, MqttPacketType type, MqttReasonCode code, int propertiesLength, uint? sessionExpiry, string? authenticationMethod, string? reasonString, string? serverReference)
    {
        var remaining = code == MqttReasonCode.Success && propertiesLength == 0
            ? 0
            : 1 + (propertiesLength > 0 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0);
        var total = MqttSpanWriter.PacketSize(remaining);
        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(type, 0, remaining);
        if (remaining > 0)
        {
            w.Byte((byte)code);
            if (propertiesLength > 0)
            {
                w.VariableByteInteger(propertiesLength);
                if (sessionExpiry.HasValue)
                {
                    w.UInt32Property(0x11, sessionExpiry.Value);
                }

                if (authenticationMethod is not null)
                {
                    w.StringProperty(0x15, authenticationMethod);
                }

                if (reasonString is not null)
                {
                    w.StringProperty(0x1F, reasonString);
                }

                if (serverReference is not null)
                {
                    w.StringProperty(0x1C, serverReference);
                }
            }
        }

        writer.Advance(total);
    }

    private static void WriteIdPropertiesCodes(IBufferWriter<byte> writer, MqttPacketType type, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<byte> codes, string? reasonString)
    {
        RequirePacketId(packetId);
        var v5 = version == MqttProtocolVersion.V500;
        var propertiesLength = v5 && reasonString is not null ? 1 + MqttSpanWriter.StringSize(reasonString) : 0;
        var remaining = 2L + (v5 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0) + codes.Length;
        var total = MqttSpanWriter.PacketSize(remaining);
        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(type, 0, (int)remaining);
        w.UInt16(packetId);
        if (v5)
        {
            w.VariableByteInteger(propertiesLength);
            if (reasonString is not null)
            {
                w.StringProperty(0x1F, reasonString);
            }
        }

        w.Bytes(codes);
        writer.Advance(total);
    }

    private static void WriteEmpty(IBufferWriter<byte> writer, MqttPacketType type)
    {
        var span = writer.GetSpan(2);
        span[0] = (byte)((int)type << 4);
        span[1] = 0;
        writer.Advance(2);
    }

    private static void CopyChunked(IBufferWriter<byte> writer, ReadOnlySpan<byte> data)
    {
        // A payload may be far larger than one buffer segment: copy it in the sizes the writer offers.
        while (!data.IsEmpty)
        {
            var destination = writer.GetSpan();
            var count = Math.Min(destination.Length, data.Length);
            data[..count].CopyTo(destination);
            writer.Advance(count);
            data = data[count..];
        }
    }

    private static void RequirePacketId(ushort packetId)
    {
        // v5 [MQTT-2.2.1-3], v3.1.1 [MQTT-2.3.1-1]: Packet Identifiers are non-zero.
        if (packetId == 0)
        {
            MqttSpanWriter.ThrowArgument("Packet Identifier 0 is not allowed (§2.2.1).", nameof(packetId));
        }
    }
}
