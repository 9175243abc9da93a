using System.Buffers;

namespace Relay.Protocol.Mqtt;

public static partial class MqttPacketWriter
{
    private static long MeasurePublishRemaining(MqttProtocolVersion version, int topicLength, byte qos, in MqttPublishProperties properties, long payloadLength, out int propertiesLength)
    {
        if (qos > 2)
        {
            // [MQTT-3.3.1-4]: no QoS 3.
            MqttSpanWriter.ThrowArgument("QoS is 0, 1 or 2.", nameof(qos));
        }

        propertiesLength = version == MqttProtocolVersion.V500 ? MeasurePublishProperties(properties) : 0;
        return MqttSpanWriter.BinarySize(topicLength)
            + (qos > 0 ? 2 : 0)
            + (version == MqttProtocolVersion.V500 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0)
            + payloadLength;
    }

    private static void WritePublishHeader(IBufferWriter<byte> writer, MqttProtocolVersion version, ReadOnlySpan<byte> topic, byte qos, bool retain, bool dup, ushort packetId, in MqttPublishProperties properties, long payloadLength)
    {
        var remaining = MeasurePublishRemaining(version, topic.Length, qos, properties, payloadLength, out var propertiesLength);
        if (qos > 0)
        {
            RequirePacketId(packetId);
        }
        else if (dup)
        {
            // [MQTT-3.3.1-2]: "The DUP flag MUST be set to 0 for all QoS 0 messages".
            MqttSpanWriter.ThrowArgument("DUP must be 0 for QoS 0.", nameof(dup));
        }

        // [MQTT-3.3.2-2] and §3.3.2.1: a Topic Name without wildcards; empty only with a v5 Topic Alias.
        if (topic.IsEmpty ? version != MqttProtocolVersion.V500 || properties.TopicAlias is null : topic.IndexOfAny((byte)'+', (byte)'#') >= 0)
        {
            MqttSpanWriter.ThrowArgument("Not a valid Topic Name for this PUBLISH.", nameof(topic));
        }

        var total = MqttSpanWriter.PacketSize(remaining);
        var headerLength = (int)(total - payloadLength);
        var w = new MqttSpanWriter(writer.GetSpan(headerLength));
        var flags = (byte)((dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0));
        w.FixedHeader(MqttPacketType.Publish, flags, (int)remaining);
        w.Binary(topic);
        if (qos > 0)
        {
            w.UInt16(packetId);
        }

        if (version == MqttProtocolVersion.V500)
        {
            w.VariableByteInteger(propertiesLength);
            WritePublishProperties(ref w, properties);
        }

        writer.Advance(headerLength);
    }

    /// <summary>§3.3.2.3: the PUBLISH properties that are set, in identifier order, then the forwarded ones.</summary>
    private static int MeasurePublishProperties(in MqttPublishProperties p)
    {
        var length = (p.PayloadFormatIndicator.HasValue ? 2 : 0)
            + (p.MessageExpiryInterval.HasValue ? 5 : 0)
            + (p.ContentType is null ? 0 : 1 + MqttSpanWriter.StringSize(p.ContentType))
            + (p.ResponseTopic is null ? 0 : 1 + MqttSpanWriter.StringSize(p.ResponseTopic))
            + (p.HasCorrelationData ? 1 + MqttSpanWriter.BinarySize(p.CorrelationData.Length) : 0)
            + (p.TopicAlias.HasValue ? 3 : 0)
            + MqttSpanWriter.UserPropertiesSize(p.UserProperties)
            + p.ForwardedProperties.Length;
        foreach (var id in p.SubscriptionIdentifiers.Span)
        {
            // §3.3.2.3.8: a Variable Byte Integer of 1 to 268,435,455.
            if (id is 0 or > MqttFrameReader.MaxRemainingLength)
            {
                MqttSpanWriter.ThrowArgument("A Subscription Identifier is 1 to 268,435,455.", nameof(p));
            }

            length += 1 + MqttWire.VariableByteIntegerSize((int)id);
        }

        return length;
    }

    private static void WritePublishProperties(ref MqttSpanWriter w, in MqttPublishProperties p)
    {
        if (p.PayloadFormatIndicator.HasValue)
        {
            w.ByteProperty(0x01, p.PayloadFormatIndicator.Value);
        }

        if (p.MessageExpiryInterval.HasValue)
        {
            w.UInt32Property(0x02, p.MessageExpiryInterval.Value);
        }

        if (p.ContentType is not null)
        {
            w.StringProperty(0x03, p.ContentType);
        }

        if (p.ResponseTopic is not null)
        {
            w.StringProperty(0x08, p.ResponseTopic);
        }

        if (p.HasCorrelationData)
        {
            w.Byte(0x09);
            w.Binary(p.CorrelationData.Span);
        }

        foreach (var id in p.SubscriptionIdentifiers.Span)
        {
            w.Byte(0x0B);
            w.VariableByteInteger((int)id);
        }

        if (p.TopicAlias.HasValue)
        {
            w.UInt16Property(0x23, p.TopicAlias.Value);
        }

        w.UserProperties(p.UserProperties);
        w.Bytes(p.ForwardedProperties.Span);
    }

    /// <summary>§3.2.2.3: the CONNACK properties that are set.</summary>
    private static int MeasureConnAckProperties(in MqttConnAckProperties p)
        => (p.SessionExpiryInterval.HasValue ? 5 : 0)
            + (p.ReceiveMaximum.HasValue ? 3 : 0)
            + (p.MaximumQoS.HasValue ? 2 : 0)
            + (p.RetainAvailable.HasValue ? 2 : 0)
            + (p.MaximumPacketSize.HasValue ? 5 : 0)
            + (p.AssignedClientIdentifier is null ? 0 : 1 + MqttSpanWriter.StringSize(p.AssignedClientIdentifier))
            + (p.TopicAliasMaximum.HasValue ? 3 : 0)
            + (p.ReasonString is null ? 0 : 1 + MqttSpanWriter.StringSize(p.ReasonString))
            + (p.WildcardSubscriptionAvailable.HasValue ? 2 : 0)
            + (p.SubscriptionIdentifiersAvailable.HasValue ? 2 : 0)
            + (p.SharedSubscriptionAvailable.HasValue ? 2 : 0)
            + (p.ServerKeepAlive.HasValue ? 3 : 0)
            + (p.ResponseInformation is null ? 0 : 1 + MqttSpanWriter.StringSize(p.ResponseInformation))
            + (p.ServerReference is null ? 0 : 1 + MqttSpanWriter.StringSize(p.ServerReference))
            + (p.AuthenticationMethod is null ? 0 : 1 + MqttSpanWriter.StringSize(p.AuthenticationMethod))
            + MqttSpanWriter.UserPropertiesSize(p.UserProperties);

    private static void WriteConnAckProperties(ref MqttSpanWriter w, in MqttConnAckProperties p)
    {
        if (p.SessionExpiryInterval.HasValue)
        {
            w.UInt32Property(0x11, p.SessionExpiryInterval.Value);
        }

        if (p.AssignedClientIdentifier is not null)
        {
            w.StringProperty(0x12, p.AssignedClientIdentifier);
        }

        if (p.ServerKeepAlive.HasValue)
        {
            w.UInt16Property(0x13, p.ServerKeepAlive.Value);
        }

        if (p.AuthenticationMethod is not null)
        {
            w.StringProperty(0x15, p.AuthenticationMethod);
        }

        if (p.ResponseInformation is not null)
        {
            w.StringProperty(0x1A, p.ResponseInformation);
        }

        if (p.ServerReference is not null)
        {
            w.StringProperty(0x1C, p.ServerReference);
        }

        if (p.ReasonString is not null)
        {
            w.StringProperty(0x1F, p.ReasonString);
        }

        if (p.ReceiveMaximum.HasValue)
        {
            w.UInt16Property(0x21, p.ReceiveMaximum.Value);
        }

        if (p.TopicAliasMaximum.HasValue)
        {
            w.UInt16Property(0x22, p.TopicAliasMaximum.Value);
        }

        if (p.MaximumQoS.HasValue)
        {
            w.ByteProperty(0x24, p.MaximumQoS.Value);
        }

        if (p.RetainAvailable.HasValue)
        {
            w.ByteProperty(0x25, p.RetainAvailable.Value ? (byte)1 : (byte)0);
        }

        w.UserProperties(p.UserProperties);

        if (p.MaximumPacketSize.HasValue)
        {
            w.UInt32Property(0x27, p.MaximumPacketSize.Value);
        }

        if (p.WildcardSubscriptionAvailable.HasValue)
        {
            w.ByteProperty(0x28, p.WildcardSubscriptionAvailable.Value ? (byte)1 : (byte)0);
        }

        if (p.SubscriptionIdentifiersAvailable.HasValue)
        {
            w.ByteProperty(0x29, p.SubscriptionIdentifiersAvailable.Value ? (byte)1 : (byte)0);
        }

        if (p.SharedSubscriptionAvailable.HasValue)
        {
            w.ByteProperty(0x2A, p.SharedSubscriptionAvailable.Value ? (byte)1 : (byte)0);
        }
    }
}
