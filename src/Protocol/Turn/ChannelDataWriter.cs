using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;

namespace Relay.Protocol.Turn;

/// <summary>
/// Writes TURN ChannelData messages (RFC 8656 §12.4; the layout is drawn at <see cref="ChannelDataReader"/>)
/// into a caller-owned buffer. Allocation-free. A destination too small, a channel number outside
/// 0x4000-0x4FFF or more than 65,535 bytes of data is a bug in the caller, so it throws.
/// </summary>
public static class ChannelDataWriter
{
    /// <summary>
    /// Writes the header, the data and, when <paramref name="pad"/> is true, zero bytes up to a multiple
    /// of four. Pad over TCP and TLS-over-TCP, where RFC 8656 §12.5 says the message "MUST be padded to a
    /// multiple of four bytes"; over UDP "the padding is not required but MAY be included".
    /// </summary>
    /// <returns>Bytes written: <see cref="GetLength"/>.</returns>
    public static int Write(Span<byte> destination, ushort channel, ReadOnlySpan<byte> data, bool pad)
    {
        var total = GetLength(data.Length, pad);
        if (destination.Length < total)
        {
            ThrowTooSmall();
        }

        WriteHeader(destination, channel, data.Length);
        var end = TurnChannel.HeaderLength + data.Length;
        data.CopyTo(destination[TurnChannel.HeaderLength..]);

        // Padding goes out as zero so it never leaks stale buffer contents (receivers ignore its value).
        destination[end..total].Clear();
        return total;
    }

    /// <summary>
    /// Writes only the 4-byte header, for a caller that places the data at <c>destination[4..]</c> itself
    /// (and, over a stream, the padding after it: see <see cref="GetLength"/>).
    /// </summary>
    /// <returns><see cref="TurnChannel.HeaderLength"/>.</returns>
    public static int WriteHeader(Span<byte> destination, ushort channel, int dataLength)
    {
        // RFC 8656 §12: only 0x4000-0x4FFF are channel numbers; the rest can never be or are reserved.
        if (!TurnChannel.IsValidRfc5766Number(channel))
        {
            ThrowInvalidChannel();
        }

        // RFC 8656 §12.4: Length is a 16-bit field.
        if ((uint)dataLength > ushort.MaxValue)
        {
            ThrowDataTooLong();
        }

        if (destination.Length < TurnChannel.HeaderLength)
        {
            ThrowTooSmall();
        }

        BinaryPrimitives.WriteUInt16BigEndian(destination, channel);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)dataLength);
        return TurnChannel.HeaderLength;
    }

    /// <summary>
    /// The size of a message carrying <paramref name="dataLength"/> bytes: 4 + dataLength, and with
    /// <paramref name="pad"/> that "rounded up to the nearest multiple of 4" (RFC 8656 §12.5).
    /// </summary>
    public static int GetLength(int dataLength, bool pad)
    {
        if ((uint)dataLength > ushort.MaxValue)
        {
            ThrowDataTooLong();
        }

        var length = TurnChannel.HeaderLength + dataLength;
        return pad ? (length + 3) & ~3 : length;
    }

    [DoesNotReturn]
    private static void ThrowTooSmall() => throw new ArgumentException("The destination is too small for this ChannelData message.");

    [DoesNotReturn]
    private static void ThrowInvalidChannel() => throw new ArgumentOutOfRangeException("channel", "A channel number must be 0x4000-0x4FFF (RFC 8656 §12).");

    [DoesNotReturn]
    private static void ThrowDataTooLong() => throw new ArgumentOutOfRangeException("data", "ChannelData carries at most 65,535 bytes (RFC 8656 §12.4).");
}
