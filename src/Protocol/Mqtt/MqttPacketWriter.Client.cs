using System.Buffers;

namespace Relay.Protocol.Mqtt;

public static partial class MqttPacketWriter
{
    /// <summary>
    /// CONNECT (§3.1), client side: "MQTT" level 4/5 (or "MQIsdp" level 3), Connect Flags, Keep Alive,
    /// (v5) Properties; payload Client Identifier, [Will Properties, Will Topic, Will Payload], [User Name],
    /// [Password].
    /// </summary>
    public static void WriteConnect(IBufferWriter<byte> writer, in MqttConnectOptions options)
    {
        var version = options.Version;
        if (version is not (MqttProtocolVersion.V310 or MqttProtocolVersion.V311 or MqttProtocolVersion.V500))
        {
            MqttSpanWriter.ThrowArgument("Unknown protocol version.", nameof(options));
        }

        var v5 = version == MqttProtocolVersion.V500;
        var hasWill = options.WillTopic is not null;
        var hasUsername = options.Username is not null;
        if (options.WillQoS > 2 || (!hasWill && (options.WillQoS != 0 || options.WillRetain)))
        {
            // [MQTT-3.1.2-11..13] (v5), [MQTT-3.1.2-13..15] (v3.1.1).
            MqttSpanWriter.ThrowArgument("Will QoS is 0-2, and Will QoS/Retain are 0 without a Will Topic.", nameof(options));
        }

        if (!v5 && options.HasPassword && !hasUsername)
        {
            // v3.1.1 [MQTT-3.1.2-22].
            MqttSpanWriter.ThrowArgument("MQTT 3.1.1 sends a password only with a user name.", nameof(options));
        }

        var propertiesLength = v5 ? MeasureConnectProperties(options) : 0;
        var willPropertiesLength = v5 && hasWill && options.WillDelayInterval.HasValue ? 5 : 0;
        var clientId = options.ClientId ?? string.Empty;
        var nameLength = version == MqttProtocolVersion.V310 ? 8 : 6;
        long remaining = nameLength + 1 + 1 + 2
            + (v5 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0)
            + MqttSpanWriter.StringSize(clientId)
            + (hasWill
                ? (v5 ? MqttWire.VariableByteIntegerSize(willPropertiesLength) + willPropertiesLength : 0)
                    + MqttSpanWriter.StringSize(options.WillTopic!) + MqttSpanWriter.BinarySize(options.WillPayload.Length)
                : 0)
            + (hasUsername ? MqttSpanWriter.StringSize(options.Username!) : 0)
            + (options.HasPassword ? MqttSpanWriter.BinarySize(options.Password.Length) : 0);
        var total = MqttSpanWriter.PacketSize(remaining);

        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(MqttPacketType.Connect, 0, (int)remaining);
        w.Binary(version == MqttProtocolVersion.V310 ? "MQIsdp"u8 : "MQTT"u8);
        w.Byte((byte)version);
        var flags = (options.CleanStart ? 0x02 : 0)
            | (hasWill ? 0x04 | (options.WillQoS << 3) | (options.WillRetain ? 0x20 : 0) : 0)
            | (options.HasPassword ? 0x40 : 0)
            | (hasUsername ? 0x80 : 0);
        w.Byte((byte)flags);
        w.UInt16(options.KeepAliveSeconds);
        if (v5)
        {
            w.VariableByteInteger(propertiesLength);
            WriteConnectProperties(ref w, options);
        }

        w.String(clientId);
        if (hasWill)
        {
            if (v5)
            {
                w.VariableByteInteger(willPropertiesLength);
                if (willPropertiesLength > 0)
                {
                    w.UInt32Property(0x18, options.WillDelayInterval!.Value);
                }
            }

            w.String(options.WillTopic!);
            w.Binary(options.WillPayload.Span);
        }

        if (hasUsername)
        {
            w.String(options.Username!);
        }

        if (options.HasPassword)
        {
            w.Binary(options.Password.Span);
        }

        writer.Advance(total);
    }

    /// <summary>
    /// SUBSCRIBE (§3.8), client side: flags 0010, Packet Identifier, (v5) Properties with an optional
    /// Subscription Identifier (0 = none), then each Topic Filter and its Subscription Options byte.
    /// </summary>
    public static void WriteSubscribe(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<MqttSubscriptionRequest> entries, uint subscriptionIdentifier = 0)
    {
        RequirePacketId(packetId);
        if (entries.IsEmpty)
        {
            // v5 [MQTT-3.8.3-2], v3.1.1 [MQTT-3.8.3-3].
            MqttSpanWriter.ThrowArgument("A SUBSCRIBE carries at least one topic filter.", nameof(entries));
        }

        if (subscriptionIdentifier > MqttFrameReader.MaxRemainingLength)
        {
            MqttSpanWriter.ThrowArgument("A Subscription Identifier is 1 to 268,435,455.", nameof(subscriptionIdentifier));
        }

        var v5 = version == MqttProtocolVersion.V500;
        var propertiesLength = v5 && subscriptionIdentifier != 0 ? 1 + MqttWire.VariableByteIntegerSize((int)subscriptionIdentifier) : 0;
        long remaining = 2 + (v5 ? MqttWire.VariableByteIntegerSize(propertiesLength) + propertiesLength : 0);
        foreach (var entry in entries)
        {
            if (entry.MaximumQoS > 2 || entry.RetainHandling > 2)
            {
                MqttSpanWriter.ThrowArgument("QoS and Retain Handling are 0-2.", nameof(entries));
            }

            remaining += MqttSpanWriter.StringSize(entry.TopicFilter) + 1;
        }

        var total = MqttSpanWriter.PacketSize(remaining);
        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(MqttPacketType.Subscribe, 0b0010, (int)remaining);
        w.UInt16(packetId);
        if (v5)
        {
            w.VariableByteInteger(propertiesLength);
            if (propertiesLength > 0)
            {
                w.Byte(0x0B);
                w.VariableByteInteger((int)subscriptionIdentifier);
            }
        }

        foreach (var entry in entries)
        {
            w.String(entry.TopicFilter);
            var options = entry.MaximumQoS;
            if (v5)
            {
                options |= (byte)((entry.NoLocal ? 0x04 : 0) | (entry.RetainAsPublished ? 0x08 : 0) | (entry.RetainHandling << 4));
            }

            w.Byte(options);
        }

        writer.Advance(total);
    }

    /// <summary>UNSUBSCRIBE (§3.10), client side: flags 0010, Packet Identifier, (v5) empty Properties, Topic Filters.</summary>
    public static void WriteUnsubscribe(IBufferWriter<byte> writer, MqttProtocolVersion version, ushort packetId, ReadOnlySpan<string> filters)
    {
        RequirePacketId(packetId);
        if (filters.IsEmpty)
        {
            // [MQTT-3.10.3-2].
            MqttSpanWriter.ThrowArgument("An UNSUBSCRIBE carries at least one topic filter.", nameof(filters));
        }

        var v5 = version == MqttProtocolVersion.V500;
        long remaining = 2 + (v5 ? 1 : 0);
        foreach (var filter in filters)
        {
            remaining += MqttSpanWriter.StringSize(filter);
        }

        var total = MqttSpanWriter.PacketSize(remaining);
        var w = new MqttSpanWriter(writer.GetSpan(total));
        w.FixedHeader(MqttPacketType.Unsubscribe, 0b0010, (int)remaining);
        w.UInt16(packetId);
        if (v5)
        {
            w.VariableByteInteger(0);
        }

        foreach (var filter in filters)
        {
            w.String(filter);
        }

        writer.Advance(total);
    }

    /// <summary>§3.1.2.11: the CONNECT properties that are set.</summary>
    private static int MeasureConnectProperties(in MqttConnectOptions o)
        => (o.SessionExpiryInterval.HasValue ? 5 : 0)
            + (o.ReceiveMaximum.HasValue ? 3 : 0)
            + (o.MaximumPacketSize.HasValue ? 5 : 0)
            + (o.TopicAliasMaximum.HasValue ? 3 : 0)
            + (o.AuthenticationMethod is null ? 0 : 1 + MqttSpanWriter.StringSize(o.AuthenticationMethod))
            + (o.AuthenticationData.IsEmpty ? 0 : 1 + MqttSpanWriter.BinarySize(o.AuthenticationData.Length))
            + MqttSpanWriter.UserPropertiesSize(o.UserProperties);

    private static void WriteConnectProperties(ref MqttSpanWriter w, in MqttConnectOptions o)
    {
        if (o.SessionExpiryInterval.HasValue)
        {
            w.UInt32Property(0x11, o.SessionExpiryInterval.Value);
        }

        if (o.AuthenticationMethod is not null)
        {
            w.StringProperty(0x15, o.AuthenticationMethod);
        }

        if (!o.AuthenticationData.IsEmpty)
        {
            w.Byte(0x16);
            w.Binary(o.AuthenticationData.Span);
        }

        if (o.ReceiveMaximum.HasValue)
        {
            w.UInt16Property(0x21, o.ReceiveMaximum.Value);
        }

        if (o.TopicAliasMaximum.HasValue)
        {
            w.UInt16Property(0x22, o.TopicAliasMaximum.Value);
        }

        w.UserProperties(o.UserProperties);

        if (o.MaximumPacketSize.HasValue)
        {
            w.UInt32Property(0x27, o.MaximumPacketSize.Value);
        }
    }
}
