using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Reads an MQTT 5 property block (§2.2.2): a Variable Byte Integer Property Length, then properties,
/// each a Variable Byte Integer identifier and a value of the identifier's type (§2.2.2.2, Table 2-4).
/// </summary>
internal static class MqttPropertyReader
{
    /// <summary>The property context for Will Properties (§3.1.3.2), which are not a packet of their own.</summary>
    public const int WillContext = 0;

    private const ushort Connect = 1 << (int)MqttPacketType.Connect;
    private const ushort ConnAck = 1 << (int)MqttPacketType.ConnAck;
    private const ushort Publish = 1 << (int)MqttPacketType.Publish;
    private const ushort Will = 1 << WillContext;
    private const ushort Acks = (1 << (int)MqttPacketType.PubAck) | (1 << (int)MqttPacketType.PubRec) | (1 << (int)MqttPacketType.PubRel) | (1 << (int)MqttPacketType.PubComp);
    private const ushort Subscribe = 1 << (int)MqttPacketType.Subscribe;
    private const ushort SubAck = 1 << (int)MqttPacketType.SubAck;
    private const ushort Unsubscribe = 1 << (int)MqttPacketType.Unsubscribe;
    private const ushort UnsubAck = 1 << (int)MqttPacketType.UnsubAck;
    private const ushort Disconnect = 1 << (int)MqttPacketType.Disconnect;
    private const ushort Auth = 1 << (int)MqttPacketType.Auth;

    /// <summary>§2.2.2.2 Table 2-4: in which packets (bit = packet type, bit 0 = Will Properties) each identifier may appear.</summary>
    private static ReadOnlySpan<ushort> AllowedIn =>
    [
        0, Publish | Will, Publish | Will, Publish | Will, 0, 0, 0, 0, // 0x00-0x07
        Publish | Will, Publish | Will, 0, Publish | Subscribe, 0, 0, 0, 0, // 0x08-0x0F
        0, Connect | ConnAck | Disconnect, ConnAck, ConnAck, 0, Connect | ConnAck | Auth, Connect | ConnAck | Auth, Connect, // 0x10-0x17
        Will, Connect, ConnAck, 0, ConnAck | Disconnect, 0, 0, ConnAck | Acks | SubAck | UnsubAck | Disconnect | Auth, // 0x18-0x1F
        0, Connect | ConnAck, Connect | ConnAck, Publish, ConnAck, ConnAck, // 0x20-0x25
        Connect | ConnAck | Publish | Will | Acks | Subscribe | SubAck | Unsubscribe | UnsubAck | Disconnect | Auth, // 0x26
        Connect | ConnAck, ConnAck, ConnAck, ConnAck, // 0x27-0x2A
    ];

    /// <summary>
    /// Reads the Property Length and the properties of one packet. An identifier unknown or not allowed in
    /// <paramref name="context"/>, or a value not of its type, is malformed (§2.2.2.2: "A Control Packet
    /// which contains an Identifier which is not valid for its packet type, or contains a value not of the
    /// specified data type, is a Malformed Packet"); a single-valued property given twice, or a value out
    /// of its range, is a protocol error (stated per property, e.g. §3.1.2.11.2).
    /// </summary>
    /// <param name="reader">Positioned at the Property Length; on success, after the properties.</param>
    /// <param name="context">The packet type, or <see cref="WillContext"/>.</param>
    /// <param name="properties">The decoded properties.</param>
    public static MqttDecodeError Read(ref SequenceReader<byte> reader, int context, out MqttProperties properties)
    {
        properties = default;
        if (!MqttWire.TryReadVariableByteInteger(ref reader, out var length) || length > reader.Remaining)
        {
            return MqttDecodeError.MalformedPacket;
        }

        if (length == 0)
        {
            return MqttDecodeError.None;
        }

        reader.TryReadExact(length, out var raw);
        var values = default(MqttPropertyValues);
        values.Raw = raw;
        var error = Parse(raw, context, ref values);
        if (error == MqttDecodeError.None)
        {
            properties = new MqttProperties(values);
        }

        return error;
    }

    private static MqttDecodeError Parse(in ReadOnlySequence<byte> raw, int context, ref MqttPropertyValues v)
    {
        var r = new SequenceReader<byte>(raw);
        var seen = 0UL;
        var allowedMask = (ushort)(1 << context);
        while (!r.End)
        {
            if (!MqttWire.TryReadVariableByteInteger(ref r, out var id))
            {
                return MqttDecodeError.MalformedPacket;
            }

            if ((uint)id >= (uint)AllowedIn.Length || (AllowedIn[id] & allowedMask) == 0)
            {
                return MqttDecodeError.MalformedPacket;
            }

            var bit = 1UL << id;
            var repeatable = id == 0x26 || (id == 0x0B && context == (int)MqttPacketType.Publish);
            if ((seen & bit) != 0 && !repeatable)
            {
                return MqttDecodeError.ProtocolError;
            }

            seen |= bit;
            var error = ReadOne(ref r, id, ref v);
            if (error != MqttDecodeError.None)
            {
                return error;
            }
        }

        return MqttDecodeError.None;
    }

    private static MqttDecodeError ReadOne(ref SequenceReader<byte> r, int id, ref MqttPropertyValues v)
    {
        switch (id)
        {
            case 0x01:
                // §3.3.2.3.2: 0 unspecified bytes, 1 UTF-8.
                return ReadFlag(ref r, out v.PayloadFormatIndicator);
            case 0x02:
                return ReadUInt32(ref r, out v.MessageExpiryInterval);
            case 0x03:
                v.HasContentType = true;
                return MqttWire.ReadString(ref r, out v.ContentType);
            case 0x08:
                v.HasResponseTopic = true;
                var topicError = MqttWire.ReadString(ref r, out v.ResponseTopic);
                // [MQTT-3.3.2-14]: the Response Topic MUST be a Topic Name (no wildcards).
                return topicError != MqttDecodeError.None ? topicError
                    : IsTopicName(v.ResponseTopic) ? MqttDecodeError.None : MqttDecodeError.ProtocolError;
            case 0x09:
                v.HasCorrelationData = true;
                return MqttWire.TryReadBinary(ref r, out v.CorrelationData) ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
            case 0x0B:
                if (!MqttWire.TryReadVariableByteInteger(ref r, out var subscriptionId))
                {
                    return MqttDecodeError.MalformedPacket;
                }

                // §3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0".
                if (subscriptionId == 0)
                {
                    return MqttDecodeError.ProtocolError;
                }

                v.SubscriptionIdentifier ??= (uint)subscriptionId;
                return MqttDecodeError.None;
            case 0x11:
                return ReadUInt32(ref r, out v.SessionExpiryInterval);
            case 0x12:
                v.HasAssignedClientIdentifier = true;
                return MqttWire.ReadString(ref r, out v.AssignedClientIdentifier);
            case 0x13:
                return ReadUInt16(ref r, out v.ServerKeepAlive);
            case 0x15:
                v.HasAuthenticationMethod = true;
                return MqttWire.ReadString(ref r, out v.AuthenticationMethod);
            case 0x16:
                v.HasAuthenticationData = true;
                return MqttWire.TryReadBinary(ref r, out v.AuthenticationData) ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
            case 0x17:
                // §3.1.2.11.7: "a value other than 0 or 1" is a Protocol Error.
                return ReadFlag(ref r, out v.RequestProblemInformation);
            case 0x18:
                return ReadUInt32(ref r, out v.WillDelayInterval);
            case 0x19:
                // §3.1.2.11.6: "a value other than 0 or 1" is a Protocol Error.
                return ReadFlag(ref r, out v.RequestResponseInformation);
            case 0x1A:
                v.HasResponseInformation = true;
                return MqttWire.ReadString(ref r, out v.ResponseInformation);
            case 0x1C:
                v.HasServerReference = true;
                return MqttWire.ReadString(ref r, out v.ServerReference);
            case 0x1F:
                v.HasReasonString = true;
                return MqttWire.ReadString(ref r, out v.ReasonString);
            case 0x21:
                // §3.1.2.11.3 / §3.2.2.3.3: "It is a Protocol Error … to have the value 0".
                return ReadNonZeroUInt16(ref r, out v.ReceiveMaximum);
            case 0x22:
                return ReadUInt16(ref r, out v.TopicAliasMaximum);
            case 0x23:
                // A Topic Alias of 0 is decodable; the engine answers it with 0x94 ([MQTT-3.3.2-8]).
                return ReadUInt16(ref r, out v.TopicAlias);
            case 0x24:
                // §3.2.2.3.4: "It is a Protocol Error to include Maximum QoS more than once, or to have a value other than 0 or 1".
                return ReadFlag(ref r, out v.MaximumQoS);
            case 0x25:
                return ReadFlag(ref r, out v.RetainAvailable);
            case 0x26:
                var nameError = MqttWire.ReadString(ref r, out _);
                if (nameError != MqttDecodeError.None)
                {
                    return nameError;
                }

                var valueError = MqttWire.ReadString(ref r, out _);
                if (valueError == MqttDecodeError.None)
                {
                    v.UserPropertyCount++;
                }

                return valueError;
            case 0x27:
                // §3.1.2.11.4: "It is a Protocol Error to include … the value zero".
                if (!MqttWire.TryReadUInt32(ref r, out var maximumPacketSize))
                {
                    return MqttDecodeError.MalformedPacket;
                }

                v.MaximumPacketSize = maximumPacketSize;
                return maximumPacketSize == 0 ? MqttDecodeError.ProtocolError : MqttDecodeError.None;
            case 0x28:
                return ReadFlag(ref r, out v.WildcardSubscriptionAvailable);
            case 0x29:
                return ReadFlag(ref r, out v.SubscriptionIdentifierAvailable);
            case 0x2A:
                return ReadFlag(ref r, out v.SharedSubscriptionAvailable);
            default:
                return MqttDecodeError.MalformedPacket;
        }
    }

    private static bool IsTopicName(in ReadOnlySequence<byte> topic)
    {
        if (topic.IsEmpty)
        {
            return false;
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

    private static MqttDecodeError ReadFlag(ref SequenceReader<byte> r, out byte? value)
    {
        if (!r.TryRead(out var b))
        {
            value = null;
            return MqttDecodeError.MalformedPacket;
        }

        value = b;
        return b > 1 ? MqttDecodeError.ProtocolError : MqttDecodeError.None;
    }

    private static MqttDecodeError ReadUInt16(ref SequenceReader<byte> r, out ushort? value)
    {
        var ok = MqttWire.TryReadUInt16(ref r, out var raw);
        value = raw;
        return ok ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
    }

    private static MqttDecodeError ReadNonZeroUInt16(ref SequenceReader<byte> r, out ushort? value)
    {
        var ok = MqttWire.TryReadUInt16(ref r, out var raw);
        value = raw;
        return !ok ? MqttDecodeError.MalformedPacket : raw == 0 ? MqttDecodeError.ProtocolError : MqttDecodeError.None;
    }

    private static MqttDecodeError ReadUInt32(ref SequenceReader<byte> r, out uint? value)
    {
        var ok = MqttWire.TryReadUInt32(ref r, out var raw);
        value = raw;
        return ok ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
    }

    /// <summary>
    /// Walks already validated property bytes; yields each identifier with the sequence its value spans.
    /// Used by the user-property enumerator and the forwarding copy, which both trust <see cref="Parse"/>.
    /// </summary>
    public static bool TryReadNext(ref SequenceReader<byte> r, out int id, out ReadOnlySequence<byte> entry)
    {
        var start = r.Position;
        entry = default;
        if (!MqttWire.TryReadVariableByteInteger(ref r, out id))
        {
            return false;
        }

        var ok = id switch
        {
            0x01 or 0x17 or 0x19 or 0x24 or 0x25 or 0x28 or 0x29 or 0x2A => r.TryAdvance(1),
            0x13 or 0x21 or 0x22 or 0x23 => r.TryAdvance(2),
            0x02 or 0x11 or 0x18 or 0x27 => r.TryAdvance(4),
            0x0B => MqttWire.TryReadVariableByteInteger(ref r, out _),
            0x03 or 0x08 or 0x09 or 0x12 or 0x15 or 0x16 or 0x1A or 0x1C or 0x1F => MqttWire.TryReadBinary(ref r, out _),
            0x26 => MqttWire.TryReadBinary(ref r, out _) && MqttWire.TryReadBinary(ref r, out _),
            _ => false,
        };
        if (ok)
        {
            entry = r.Sequence.Slice(start, r.Position);
        }

        return ok;
    }

    private static bool TryAdvance(this ref SequenceReader<byte> r, int count)
    {
        if (r.Remaining < count)
        {
            return false;
        }

        r.Advance(count);
        return true;
    }
}
