using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Decodes the body of a framed packet. Each reader validates the body completely (reserved bits,
/// lengths, QoS 3, packet id 0, UTF-8, properties, trailing bytes) and never throws on malformed input:
/// the result is <see cref="MqttDecodeError.None"/> or why the packet is refused. The decoded packet is a
/// view of <see cref="MqttFrame.Body"/>, valid until the caller's <c>AdvanceTo</c>.
/// </summary>
/// <remarks>
/// The frame's type and flags were already checked by <see cref="MqttFrameReader"/>; a reader called with a
/// frame of another type answers <see cref="MqttDecodeError.ProtocolError"/>. "v" is the version negotiated
/// by CONNECT; <see cref="MqttProtocolVersion.V310"/> reads like 3.1.1.
/// </remarks>
public static partial class MqttPacketReader
{
    /// <summary>
    /// CONNECT (§3.1). Variable header: Protocol Name, Protocol Level, Connect Flags, Keep Alive, then
    /// (v5) Properties; payload: Client Identifier, (v5) Will Properties, Will Topic, Will Payload, User
    /// Name, Password, each present only when its flag is set (§3.1.3).
    /// </summary>
    public static MqttDecodeError ReadConnect(in MqttFrame frame, out MqttConnect packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.Connect)
        {
            return MqttDecodeError.ProtocolError;
        }

        var r = new SequenceReader<byte>(frame.Body);

        // §3.1.2.1 / §3.1.2.2: "MQTT" with level 4 or 5; 3.1 clients send "MQIsdp" with level 3.
        if (!MqttWire.TryReadBinary(ref r, out var protocolName) || !r.TryRead(out var level))
        {
            return MqttDecodeError.MalformedPacket;
        }

        Span<byte> scratch = stackalloc byte[6];
        var name = MqttWire.AsSpan(protocolName, scratch);
        MqttProtocolVersion version;
        if (name.SequenceEqual("MQTT"u8) && level is 4 or 5)
        {
            version = (MqttProtocolVersion)level;
        }
        else if (name.SequenceEqual("MQIsdp"u8) && level == 3)
        {
            version = MqttProtocolVersion.V310;
        }
        else
        {
            // [MQTT-3.1.2-1] (name) and [MQTT-3.1.2-2] (level): answer 0x84 / return code 1, then close.
            return MqttDecodeError.UnsupportedProtocolVersion;
        }

        if (!r.TryRead(out var flags) || !MqttWire.TryReadUInt16(ref r, out var keepAlive))
        {
            return MqttDecodeError.MalformedPacket;
        }

        // [MQTT-3.1.2-3]: the reserved flag (bit 0) MUST be 0, else the packet is malformed.
        if ((flags & 0x01) != 0)
        {
            return MqttDecodeError.MalformedPacket;
        }

        var cleanStart = (flags & 0x02) != 0;
        var hasWill = (flags & 0x04) != 0;
        var willQoS = (byte)((flags >> 3) & 0x03);
        var willRetain = (flags & 0x20) != 0;
        var hasPassword = (flags & 0x40) != 0;
        var hasUsername = (flags & 0x80) != 0;

        // v5 [MQTT-3.1.2-11]/[MQTT-3.1.2-13], v3.1.1 [MQTT-3.1.2-13]/[MQTT-3.1.2-15]: without a will, Will QoS
        // and Will Retain are 0. v5 [MQTT-3.1.2-12], v3.1.1 [MQTT-3.1.2-14]: Will QoS is never 3.
        if ((!hasWill && (willQoS != 0 || willRetain)) || willQoS == 3)
        {
            return MqttDecodeError.MalformedPacket;
        }

        // v3.1.1 [MQTT-3.1.2-22]: "If the User Name Flag is set to 0, the Password Flag MUST be set to 0".
        // MQTT 5 lifted this (§3.1.2.9).
        if (version != MqttProtocolVersion.V500 && hasPassword && !hasUsername)
        {
            return MqttDecodeError.MalformedPacket;
        }

        MqttProperties properties = default;
        MqttDecodeError error;
        if (version == MqttProtocolVersion.V500)
        {
            error = MqttPropertyReader.Read(ref r, (int)MqttPacketType.Connect, out properties);
            if (error != MqttDecodeError.None)
            {
                return error;
            }

            // §3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is no Authentication Method".
            if (properties.HasAuthenticationData && !properties.HasAuthenticationMethod)
            {
                return MqttDecodeError.ProtocolError;
            }
        }

        // §3.1.3.1: the Client Identifier is a UTF-8 Encoded String ([MQTT-3.1.3-4]).
        error = MqttWire.ReadString(ref r, out var clientId);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        if (clientId.IsEmpty)
        {
            // v3.1.1 [MQTT-3.1.3-8]: an empty ClientId with CleanSession 0 gets return code 2 (identifier
            // rejected). MQTT 3.1 (§3.1 "MQIsdp") requires 1 to 23 characters.
            if (version == MqttProtocolVersion.V310 || (version == MqttProtocolVersion.V311 && !cleanStart))
            {
                return MqttDecodeError.ClientIdentifierNotValid;
            }
        }

        MqttProperties willProperties = default;
        ReadOnlySequence<byte> willTopic = default, willPayload = default;
        if (hasWill)
        {
            if (version == MqttProtocolVersion.V500)
            {
                error = MqttPropertyReader.Read(ref r, MqttPropertyReader.WillContext, out willProperties);
                if (error != MqttDecodeError.None)
                {
                    return error;
                }
            }

            error = MqttWire.ReadString(ref r, out willTopic);
            if (error != MqttDecodeError.None)
            {
                return error;
            }

            // The Will Topic is a Topic Name (§3.1.3.3, [MQTT-3.1.3-11]): no wildcards, not empty.
            if (!IsTopicName(willTopic))
            {
                return MqttDecodeError.TopicNameInvalid;
            }

            if (!MqttWire.TryReadBinary(ref r, out willPayload))
            {
                return MqttDecodeError.MalformedPacket;
            }
        }

        ReadOnlySequence<byte> username = default, password = default;
        if (hasUsername)
        {
            // §3.1.3.5 [MQTT-3.1.3-12]: a UTF-8 Encoded String.
            error = MqttWire.ReadString(ref r, out username);
            if (error != MqttDecodeError.None)
            {
                return error;
            }
        }

        if (hasPassword && !MqttWire.TryReadBinary(ref r, out password))
        {
            return MqttDecodeError.MalformedPacket;
        }

        if (!r.End)
        {
            return MqttDecodeError.MalformedPacket;
        }

        packet = new MqttConnect
        {
            Version = version,
            CleanStart = cleanStart,
            KeepAliveSeconds = keepAlive,
            ClientId = clientId,
            HasUsername = hasUsername,
            Username = username,
            HasPassword = hasPassword,
            Password = password,
            HasWill = hasWill,
            WillQoS = willQoS,
            WillRetain = willRetain,
            WillTopic = willTopic,
            WillPayload = willPayload,
            Properties = properties,
            WillProperties = willProperties,
        };
        return MqttDecodeError.None;
    }

    /// <summary>
    /// CONNACK (§3.2), client side: Connect Acknowledge Flags (bits 7-1 reserved, 0 [MQTT-3.2.2-1]), the v5
    /// Reason Code or v3.1.1 Return Code, then (v5) Properties.
    /// </summary>
    public static MqttDecodeError ReadConnAck(in MqttFrame frame, MqttProtocolVersion version, out MqttConnAck packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.ConnAck)
        {
            return MqttDecodeError.ProtocolError;
        }

        var r = new SequenceReader<byte>(frame.Body);
        if (!r.TryRead(out var ackFlags) || !r.TryRead(out var code) || (ackFlags & 0xFE) != 0)
        {
            return MqttDecodeError.MalformedPacket;
        }

        var sessionPresent = (ackFlags & 0x01) != 0;
        MqttProperties properties = default;
        if (version == MqttProtocolVersion.V500)
        {
            if (!IsOneOf(code, ConnAckCodes))
            {
                return MqttDecodeError.ProtocolError;
            }

            var error = MqttPropertyReader.Read(ref r, (int)MqttPacketType.ConnAck, out properties);
            if (error != MqttDecodeError.None)
            {
                return error;
            }
        }
        else if (code > (byte)MqttConnectReturnCode.NotAuthorized)
        {
            return MqttDecodeError.ProtocolError;
        }

        // v5 [MQTT-3.2.2-6], v3.1.1 [MQTT-3.2.2-4]: a refusal carries Session Present 0.
        if (code != 0 && sessionPresent)
        {
            return MqttDecodeError.ProtocolError;
        }

        if (!r.End)
        {
            return MqttDecodeError.MalformedPacket;
        }

        packet = new MqttConnAck { SessionPresent = sessionPresent, ReasonCode = code, Properties = properties };
        return MqttDecodeError.None;
    }

    /// <summary>
    /// PUBLISH (§3.3): flags DUP, QoS, RETAIN in the fixed header; Topic Name, Packet Identifier (QoS 1
    /// and 2 only), (v5) Properties; the rest is the payload, possibly empty.
    /// </summary>
    public static MqttDecodeError ReadPublish(in MqttFrame frame, MqttProtocolVersion version, out MqttPublish packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.Publish)
        {
            return MqttDecodeError.ProtocolError;
        }

        var dup = (frame.Flags & 0x08) != 0;
        var qos = (byte)((frame.Flags >> 1) & 0x03);
        var retain = (frame.Flags & 0x01) != 0;

        // [MQTT-3.3.1-4]: QoS 3 is malformed (the frame reader already refuses it).
        if (qos == 3)
        {
            return MqttDecodeError.MalformedPacket;
        }

        // v5 [MQTT-3.3.1-2]: "The DUP flag MUST be set to 0 for all QoS 0 messages"; MQTT 5 §4.13 lists it
        // under malformed packets. 3.1.1 clients are given the benefit of the doubt, as common brokers do.
        if (version == MqttProtocolVersion.V500 && dup && qos == 0)
        {
            return MqttDecodeError.MalformedPacket;
        }

        var r = new SequenceReader<byte>(frame.Body);
        var error = MqttWire.ReadString(ref r, out var topic);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        // [MQTT-3.3.2-2]: "The Topic Name in the PUBLISH Packet MUST NOT contain wildcard characters".
        if (!topic.IsEmpty && !IsTopicName(topic))
        {
            return MqttDecodeError.TopicNameInvalid;
        }

        ushort packetId = 0;
        if (qos > 0)
        {
            if (!MqttWire.TryReadUInt16(ref r, out packetId))
            {
                return MqttDecodeError.MalformedPacket;
            }

            // v5 [MQTT-2.2.1-3], v3.1.1 [MQTT-2.3.1-1]: a QoS > 0 PUBLISH carries a non-zero Packet Identifier.
            if (packetId == 0)
            {
                return MqttDecodeError.ProtocolError;
            }
        }

        MqttProperties properties = default;
        if (version == MqttProtocolVersion.V500)
        {
            error = MqttPropertyReader.Read(ref r, (int)MqttPacketType.Publish, out properties);
            if (error != MqttDecodeError.None)
            {
                return error;
            }

            // §3.3.2.1: a zero-length Topic Name needs a Topic Alias: "It is a Protocol Error if the Topic
            // Name is zero length and there is no Topic Alias".
            if (topic.IsEmpty && properties.TopicAlias is null)
            {
                return MqttDecodeError.ProtocolError;
            }
        }
        else if (topic.IsEmpty)
        {
            // v3.1.1 [MQTT-4.7.3-1]: a Topic Name is at least one character long.
            return MqttDecodeError.TopicNameInvalid;
        }

        packet = new MqttPublish
        {
            QoS = qos,
            Retain = retain,
            Dup = dup,
            Topic = topic,
            PacketId = packetId,
            Properties = properties,
            Payload = r.UnreadSequence,
        };
        return MqttDecodeError.None;
    }

    /// <summary>
    /// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7): Packet Identifier; in v5 optionally a Reason Code and
    /// then optionally Properties (§3.4.2.1: "The Reason Code and Property Length can be omitted if the
    /// Reason Code is 0x00 (Success) and there are no Properties"). v3.1.1: exactly two bytes.
    /// </summary>
    public static MqttDecodeError ReadAck(in MqttFrame frame, MqttProtocolVersion version, out MqttAck packet)
    {
        packet = default;
        if (frame.Type is not (MqttPacketType.PubAck or MqttPacketType.PubRec or MqttPacketType.PubRel or MqttPacketType.PubComp))
        {
            return MqttDecodeError.ProtocolError;
        }

        var r = new SequenceReader<byte>(frame.Body);
        if (!MqttWire.TryReadUInt16(ref r, out var packetId))
        {
            return MqttDecodeError.MalformedPacket;
        }

        // v5 [MQTT-2.2.1-3], v3.1.1 [MQTT-2.3.1-1]: Packet Identifiers are non-zero.
        if (packetId == 0)
        {
            return MqttDecodeError.ProtocolError;
        }

        var code = MqttReasonCode.Success;
        MqttProperties properties = default;
        if (version == MqttProtocolVersion.V500)
        {
            if (r.TryRead(out var raw))
            {
                code = (MqttReasonCode)raw;
                var allowed = frame.Type is MqttPacketType.PubAck or MqttPacketType.PubRec ? PubAckCodes : PubRelCodes;
                if (!IsOneOf(raw, allowed))
                {
                    return MqttDecodeError.ProtocolError;
                }

                // §3.4.2.2.1: "If the Remaining Length is less than 4 there is no Property Length".
                if (!r.End)
                {
                    var error = MqttPropertyReader.Read(ref r, (int)frame.Type, out properties);
                    if (error != MqttDecodeError.None)
                    {
                        return error;
                    }
                }
            }
        }

        if (!r.End)
        {
            return MqttDecodeError.MalformedPacket;
        }

        packet = new MqttAck { Type = frame.Type, PacketId = packetId, ReasonCode = code, Properties = properties };
        return MqttDecodeError.None;
    }

    /// <summary>A non-empty Topic Name without wildcards ([MQTT-3.3.2-2], [MQTT-4.7.3-1]); U+0000 was already refused.</summary>
    private static bool IsTopicName(in ReadOnlySequence<byte> topic)
    {
        if (topic.IsSingleSegment)
        {
            return !topic.IsEmpty && topic.FirstSpan.IndexOfAny((byte)'+', (byte)'#') < 0;
        }

        foreach (var segment in topic)
        {
            if (segment.Span.IndexOfAny((byte)'+', (byte)'#') >= 0)
            {
                return false;
            }
        }

        return true;
    }

    private static bool IsOneOf(byte code, ReadOnlySpan<byte> allowed) => allowed.Contains(code);

    // §3.2.2.2 Table 3-1.
    private static ReadOnlySpan<byte> ConnAckCodes => [0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F];

    // §3.4.2.1 Table 3-4 (PUBACK) and §3.5.2.1 Table 3-5 (PUBREC): the same set.
    private static ReadOnlySpan<byte> PubAckCodes => [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];

    // §3.6.2.1 Table 3-6 (PUBREL) and §3.7.2.1 Table 3-7 (PUBCOMP).
    private static ReadOnlySpan<byte> PubRelCodes => [0x00, 0x92];

    // §3.9.3 Table 3-8 (SUBACK, v5).
    private static ReadOnlySpan<byte> SubAckCodes => [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];

    // v3.1.1 §3.9.3: 0x00, 0x01, 0x02 granted, 0x80 failure.
    private static ReadOnlySpan<byte> SubAckCodesV311 => [0x00, 0x01, 0x02, 0x80];

    // §3.11.3 Table 3-9 (UNSUBACK).
    private static ReadOnlySpan<byte> UnsubAckCodes => [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

    // §3.14.2.1 Table 3-10 (DISCONNECT).
    private static ReadOnlySpan<byte> DisconnectCodes =>
        [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2];

    // §3.15.2.1 Table 3-11 (AUTH).
    private static ReadOnlySpan<byte> AuthCodes => [0x00, 0x18, 0x19];
}
