using System.Buffers;

namespace Relay.Protocol.Mqtt;

public static partial class MqttPacketReader
{
    /// <summary>
    /// SUBSCRIBE (§3.8): Packet Identifier, (v5) Properties, then one or more Topic Filter + Subscription
    /// Options pairs. v5 options: bits 0-1 Maximum QoS, 2 No Local, 3 Retain As Published, 4-5 Retain
    /// Handling, 6-7 reserved; v3.1.1: bits 0-1 Requested QoS, 2-7 reserved.
    /// </summary>
    public static MqttDecodeError ReadSubscribe(in MqttFrame frame, MqttProtocolVersion version, out MqttSubscribe packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.Subscribe)
        {
            return MqttDecodeError.ProtocolError;
        }

        var error = ReadIdAndProperties(frame, version, out var r, out var packetId, out var properties);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        var entries = r.UnreadSequence;
        var count = 0;
        while (!r.End)
        {
            error = ReadSubscribeEntry(ref r, version, out _);
            if (error != MqttDecodeError.None)
            {
                return error;
            }

            count++;
        }

        // v5 [MQTT-3.8.3-2], v3.1.1 [MQTT-3.8.3-3]: at least one Topic Filter; none is a protocol error.
        if (count == 0)
        {
            return MqttDecodeError.ProtocolError;
        }

        packet = new MqttSubscribe { PacketId = packetId, Properties = properties, EntriesRaw = entries, EntryCount = count };
        return MqttDecodeError.None;
    }

    /// <summary>UNSUBSCRIBE (§3.10): Packet Identifier, (v5) Properties, then one or more Topic Filters.</summary>
    public static MqttDecodeError ReadUnsubscribe(in MqttFrame frame, MqttProtocolVersion version, out MqttUnsubscribe packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.Unsubscribe)
        {
            return MqttDecodeError.ProtocolError;
        }

        var error = ReadIdAndProperties(frame, version, out var r, out var packetId, out var properties);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        var filters = r.UnreadSequence;
        var count = 0;
        while (!r.End)
        {
            error = ReadTopicFilter(ref r, out _);
            if (error != MqttDecodeError.None)
            {
                return error;
            }

            count++;
        }

        // [MQTT-3.10.3-2]: "The Payload of an UNSUBSCRIBE packet MUST contain at least one Topic Filter".
        if (count == 0)
        {
            return MqttDecodeError.ProtocolError;
        }

        packet = new MqttUnsubscribe { PacketId = packetId, Properties = properties, FiltersRaw = filters, FilterCount = count };
        return MqttDecodeError.None;
    }

    /// <summary>SUBACK (§3.9), client side: Packet Identifier, (v5) Properties, one code per filter.</summary>
    public static MqttDecodeError ReadSubAck(in MqttFrame frame, MqttProtocolVersion version, out MqttSubAck packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.SubAck)
        {
            return MqttDecodeError.ProtocolError;
        }

        var error = ReadIdAndProperties(frame, version, out var r, out var packetId, out var properties);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        var codes = r.UnreadSequence;
        if (codes.IsEmpty)
        {
            return MqttDecodeError.ProtocolError;
        }

        var allowed = version == MqttProtocolVersion.V500 ? SubAckCodes : SubAckCodesV311;
        while (r.TryRead(out var code))
        {
            if (!IsOneOf(code, allowed))
            {
                return MqttDecodeError.ProtocolError;
            }
        }

        packet = new MqttSubAck { PacketId = packetId, Properties = properties, ReasonCodes = codes };
        return MqttDecodeError.None;
    }

    /// <summary>UNSUBACK (§3.11), client side: Packet Identifier; v5 adds Properties and one code per filter.</summary>
    public static MqttDecodeError ReadUnsubAck(in MqttFrame frame, MqttProtocolVersion version, out MqttUnsubAck packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.UnsubAck)
        {
            return MqttDecodeError.ProtocolError;
        }

        var error = ReadIdAndProperties(frame, version, out var r, out var packetId, out var properties);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        var codes = r.UnreadSequence;
        if (version == MqttProtocolVersion.V500)
        {
            if (codes.IsEmpty)
            {
                return MqttDecodeError.ProtocolError;
            }

            while (r.TryRead(out var code))
            {
                if (!IsOneOf(code, UnsubAckCodes))
                {
                    return MqttDecodeError.ProtocolError;
                }
            }
        }
        else if (!codes.IsEmpty)
        {
            // v3.1.1 §3.11.3: "The UNSUBACK Packet has no payload".
            return MqttDecodeError.MalformedPacket;
        }

        packet = new MqttUnsubAck { PacketId = packetId, Properties = properties, ReasonCodes = codes };
        return MqttDecodeError.None;
    }

    /// <summary>
    /// DISCONNECT (§3.14). v3.1.1: no variable header. v5: an optional Reason Code (absent = 0x00 Normal
    /// disconnection, §3.14.2.1), then optional Properties ("If the Remaining Length is less than 2, a
    /// value of 0 is used", §3.14.2.2.1).
    /// </summary>
    public static MqttDecodeError ReadDisconnect(in MqttFrame frame, MqttProtocolVersion version, out MqttDisconnect packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.Disconnect)
        {
            return MqttDecodeError.ProtocolError;
        }

        if (version != MqttProtocolVersion.V500)
        {
            return frame.Body.IsEmpty ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
        }

        var error = ReadReasonAndProperties(frame, DisconnectCodes, out var code, out var properties);
        packet = error == MqttDecodeError.None ? new MqttDisconnect { ReasonCode = code, Properties = properties } : default;
        return error;
    }

    /// <summary>
    /// AUTH (§3.15), MQTT 5 only: an optional Reason Code (absent = Success) and optional Properties
    /// (§3.15.2.1: both "can be omitted if the Reason Code is 0x00 (Success) and there are no Properties").
    /// </summary>
    public static MqttDecodeError ReadAuth(in MqttFrame frame, out MqttAuth packet)
    {
        packet = default;
        if (frame.Type != MqttPacketType.Auth)
        {
            return MqttDecodeError.ProtocolError;
        }

        var error = ReadReasonAndProperties(frame, AuthCodes, out var code, out var properties);
        packet = error == MqttDecodeError.None ? new MqttAuth { ReasonCode = code, Properties = properties } : default;
        return error;
    }

    private static MqttDecodeError ReadReasonAndProperties(in MqttFrame frame, ReadOnlySpan<byte> allowed, out MqttReasonCode code, out MqttProperties properties)
    {
        code = MqttReasonCode.Success;
        properties = default;
        var r = new SequenceReader<byte>(frame.Body);
        if (r.TryRead(out var raw))
        {
            if (!IsOneOf(raw, allowed))
            {
                return MqttDecodeError.ProtocolError;
            }

            code = (MqttReasonCode)raw;
            if (!r.End)
            {
                var error = MqttPropertyReader.Read(ref r, (int)frame.Type, out properties);
                if (error != MqttDecodeError.None)
                {
                    return error;
                }
            }
        }

        return r.End ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
    }

    private static MqttDecodeError ReadIdAndProperties(in MqttFrame frame, MqttProtocolVersion version, out SequenceReader<byte> reader, out ushort packetId, out MqttProperties properties)
    {
        reader = new SequenceReader<byte>(frame.Body);
        properties = default;
        if (!MqttWire.TryReadUInt16(ref reader, out packetId))
        {
            return MqttDecodeError.MalformedPacket;
        }

        // v5 [MQTT-2.2.1-3], v3.1.1 [MQTT-2.3.1-1]: SUBSCRIBE, UNSUBSCRIBE (and their acks) carry a non-zero id.
        if (packetId == 0)
        {
            return MqttDecodeError.ProtocolError;
        }

        return version == MqttProtocolVersion.V500
            ? MqttPropertyReader.Read(ref reader, (int)frame.Type, out properties)
            : MqttDecodeError.None;
    }

    /// <summary>One Topic Filter: a UTF-8 Encoded String (§1.5.4) that is a valid filter (§4.7).</summary>
    private static MqttDecodeError ReadTopicFilter(ref SequenceReader<byte> r, out ReadOnlySequence<byte> filter)
    {
        var error = MqttWire.ReadString(ref r, out filter);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        if (filter.IsSingleSegment)
        {
            return MqttTopic.IsValidTopicFilter(filter.FirstSpan) ? MqttDecodeError.None : MqttDecodeError.TopicFilterInvalid;
        }

        // A filter split across segments: validate a stack copy when it fits, else walk the segments.
        Span<byte> scratch = stackalloc byte[256];
        if (filter.Length <= scratch.Length)
        {
            filter.CopyTo(scratch);
            return MqttTopic.IsValidTopicFilter(scratch[..(int)filter.Length]) ? MqttDecodeError.None : MqttDecodeError.TopicFilterInvalid;
        }

        return IsValidFilterSegmented(filter) ? MqttDecodeError.None : MqttDecodeError.TopicFilterInvalid;
    }

    /// <summary>
    /// The §4.7.1 wildcard rules over a long multi-segment filter, one byte at a time ('+' and '#' fill their
    /// level, '#' is last), and for "$share/{name}/{filter}" the §4.8.2 share-name rules first.
    /// </summary>
    private static bool IsValidFilterSegmented(in ReadOnlySequence<byte> filter)
    {
        Span<byte> head = stackalloc byte[8];
        filter.Slice(0, Math.Min(8, filter.Length)).CopyTo(head);
        if (head.StartsWith("$share/"u8))
        {
            // Rare (a shared filter over 256 bytes split across segments): check the name and inner filter.
            var rest = filter.Slice(7);
            var slash = rest.PositionOf((byte)'/');
            if (slash is null)
            {
                return false;
            }

            var name = rest.Slice(0, slash.Value);
            var inner = rest.Slice(rest.GetPosition(1, slash.Value));
            if (name.IsEmpty || inner.IsEmpty || name.PositionOf((byte)'+') is not null || name.PositionOf((byte)'#') is not null)
            {
                return false;
            }

            return IsValidWildcards(inner);
        }

        return IsValidWildcards(filter);
    }

    private static bool IsValidWildcards(in ReadOnlySequence<byte> filter)
    {
        var previous = (byte)'/';
        var pendingEnd = false; // a wildcard was seen: the next byte must be '/' ('+') or there is none ('#').
        var hashSeen = false;
        foreach (var segment in filter)
        {
            foreach (var b in segment.Span)
            {
                if (hashSeen)
                {
                    return false;
                }

                if (pendingEnd && b != '/')
                {
                    return false;
                }

                pendingEnd = false;
                if (b is (byte)'+' or (byte)'#')
                {
                    if (previous != '/')
                    {
                        return false;
                    }

                    hashSeen = b == '#';
                    pendingEnd = true;
                }

                previous = b;
            }
        }

        return !filter.IsEmpty;
    }

    /// <summary>One SUBSCRIBE entry: Topic Filter, then the Subscription Options byte (§3.8.3.1).</summary>
    internal static MqttDecodeError ReadSubscribeEntry(ref SequenceReader<byte> r, MqttProtocolVersion version, out MqttSubscribeEntry entry)
    {
        entry = default;
        var error = ReadTopicFilter(ref r, out var filter);
        if (error != MqttDecodeError.None)
        {
            return error;
        }

        if (!r.TryRead(out var options))
        {
            return MqttDecodeError.MalformedPacket;
        }

        var qos = (byte)(options & 0x03);
        if (version == MqttProtocolVersion.V500)
        {
            // [MQTT-3.8.3-5]: reserved bits 6-7 non-zero is malformed; QoS 3 likewise (§3.8.3.1).
            if ((options & 0xC0) != 0 || qos == 3)
            {
                return MqttDecodeError.MalformedPacket;
            }

            // §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3".
            var retainHandling = (byte)((options >> 4) & 0x03);
            if (retainHandling == 3)
            {
                return MqttDecodeError.ProtocolError;
            }

            var noLocal = (options & 0x04) != 0;

            // [MQTT-3.8.3-4]: "It is a Protocol Error to set the No Local bit to 1 on a Shared Subscription".
            if (noLocal && StartsWithShare(filter))
            {
                return MqttDecodeError.ProtocolError;
            }

            entry = new MqttSubscribeEntry
            {
                TopicFilter = filter,
                MaximumQoS = qos,
                NoLocal = noLocal,
                RetainAsPublished = (options & 0x08) != 0,
                RetainHandling = retainHandling,
            };
            return MqttDecodeError.None;
        }

        // v3.1.1 [MQTT-3-8.3-4]: bits 2-7 are reserved and QoS is 0, 1 or 2, else malformed.
        if ((options & 0xFC) != 0 || qos == 3)
        {
            return MqttDecodeError.MalformedPacket;
        }

        entry = new MqttSubscribeEntry { TopicFilter = filter, MaximumQoS = qos };
        return MqttDecodeError.None;
    }

    private static bool StartsWithShare(in ReadOnlySequence<byte> filter)
    {
        Span<byte> head = stackalloc byte[7];
        if (filter.Length < head.Length)
        {
            return false;
        }

        filter.Slice(0, head.Length).CopyTo(head);
        return head.SequenceEqual("$share/"u8);
    }
}
