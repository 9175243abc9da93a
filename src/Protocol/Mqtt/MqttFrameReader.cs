using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Frames MQTT Control Packets out of a byte stream: the fixed header (§2.1) and the Remaining Length,
/// a Variable Byte Integer (§1.5.5).
/// <code>
/// Bit     |  7  6  5  4  |  3  2  1  0                       |
/// byte 1  | packet type  | flags specific to the packet type |
/// byte 2… | Remaining Length (1 to 4 bytes)                  |
/// </code>
/// </summary>
public static class MqttFrameReader
{
    /// <summary>The largest Remaining Length a 4-byte Variable Byte Integer can carry (§1.5.5): 268,435,455.</summary>
    public const int MaxRemainingLength = 268_435_455;

    /// <summary>The longest fixed header: one type byte and a 4-byte Remaining Length.</summary>
    public const int MaxFixedHeaderLength = 5;

    /// <summary>
    /// Reads one packet. Done: <paramref name="buffer"/> is advanced past the frame. NeedMoreData: the buffer
    /// is untouched (it is a strict prefix of a packet). InvalidData: <paramref name="error"/> says why.
    /// </summary>
    /// <remarks>
    /// Decided from the header alone, before the body has arrived: packet type 0 and wrong reserved flags
    /// (§2.1.3, [MQTT-2.1.3-1]), a PUBLISH with QoS 3 ([MQTT-3.3.1-4]), a Remaining Length whose fourth byte
    /// continues (§1.5.5), and a PINGREQ/PINGRESP with a body (§3.12, §3.13) are
    /// <see cref="MqttDecodeError.MalformedPacket"/>; a declared size above <paramref name="maxPacketSize"/>
    /// is <see cref="MqttDecodeError.PacketTooLarge"/> (§3.1.2.11.4: the server treats it as "Packet too
    /// large"), decided as soon as the bytes in hand prove it. Packet type 15 (AUTH) is framed for every
    /// version; on a 3.1.1 connection, where 15 is reserved, the caller rejects it.
    /// </remarks>
    /// <param name="buffer">Received bytes; on Done, what follows the packet.</param>
    /// <param name="maxPacketSize">The largest whole packet (fixed header included) accepted.</param>
    /// <param name="frame">On Done, the packet.</param>
    /// <param name="error">Why the status is InvalidData; <see cref="MqttDecodeError.None"/> otherwise.</param>
    public static OperationStatus TryRead(ref ReadOnlySequence<byte> buffer, int maxPacketSize, out MqttFrame frame, out MqttDecodeError error)
    {
        frame = default;

        // Fast path: the whole fixed header in the first segment; else copy what there is (at most 5 bytes).
        Span<byte> scratch = stackalloc byte[MaxFixedHeaderLength];
        scoped ReadOnlySpan<byte> header = buffer.FirstSpan;
        if (header.Length < MaxFixedHeaderLength && buffer.Length > header.Length)
        {
            var available = (int)Math.Min(MaxFixedHeaderLength, buffer.Length);
            buffer.Slice(0, available).CopyTo(scratch);
            header = scratch[..available];
        }

        if (header.IsEmpty)
        {
            error = MqttDecodeError.None;
            return OperationStatus.NeedMoreData;
        }

        var type = (MqttPacketType)(header[0] >> 4);
        var flags = (byte)(header[0] & 0x0F);
        error = ValidateTypeAndFlags(type, flags);
        if (error != MqttDecodeError.None)
        {
            return OperationStatus.InvalidData;
        }

        var remaining = 0;
        var headerLength = 0;
        for (var i = 1; i <= 4; i++)
        {
            if (i >= header.Length)
            {
                // Later bytes only add to the value: if what is known already exceeds the limit, say so now.
                if ((long)remaining + i + 1 > maxPacketSize)
                {
                    error = MqttDecodeError.PacketTooLarge;
                    return OperationStatus.InvalidData;
                }

                return OperationStatus.NeedMoreData;
            }

            var b = header[i];
            remaining |= (b & 0x7F) << (7 * (i - 1));
            if ((b & 0x80) == 0)
            {
                headerLength = i + 1;
                break;
            }
        }

        if (headerLength == 0)
        {
            // §1.5.5: at most four bytes; a fifth would be needed.
            error = MqttDecodeError.MalformedPacket;
            return OperationStatus.InvalidData;
        }

        long total = headerLength + remaining;
        if (total > maxPacketSize)
        {
            error = MqttDecodeError.PacketTooLarge;
            return OperationStatus.InvalidData;
        }

        if (remaining != 0 && type is MqttPacketType.PingReq or MqttPacketType.PingResp)
        {
            error = MqttDecodeError.MalformedPacket;
            return OperationStatus.InvalidData;
        }

        if (buffer.Length < total)
        {
            return OperationStatus.NeedMoreData;
        }

        frame = new MqttFrame(type, flags, remaining, (int)total, buffer.Slice(headerLength, remaining));
        buffer = buffer.Slice(total);
        return OperationStatus.Done;
    }

    /// <summary>
    /// §2.1.3 Table 2-2: PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0010, PUBLISH carries DUP/QoS/RETAIN, every
    /// other type 0000. "Where a flag bit is marked as Reserved … it MUST be set to the value listed"
    /// ([MQTT-2.1.3-1]); a receiver treats other values as malformed (§4.13).
    /// </summary>
    internal static MqttDecodeError ValidateTypeAndFlags(MqttPacketType type, byte flags)
    {
        switch (type)
        {
            case 0:
                // §2.1.2: 0 is reserved, "Forbidden".
                return MqttDecodeError.MalformedPacket;
            case MqttPacketType.Publish:
                // [MQTT-3.3.1-4]: "A PUBLISH Packet MUST NOT have both QoS bits set to 1".
                return (flags & 0b0110) == 0b0110 ? MqttDecodeError.MalformedPacket : MqttDecodeError.None;
            case MqttPacketType.PubRel:
            case MqttPacketType.Subscribe:
            case MqttPacketType.Unsubscribe:
                return flags == 0b0010 ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
            default:
                return flags == 0 ? MqttDecodeError.None : MqttDecodeError.MalformedPacket;
        }
    }
}
