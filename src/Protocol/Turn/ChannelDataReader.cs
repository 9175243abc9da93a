using System.Buffers;
using System.Buffers.Binary;

namespace Relay.Protocol.Turn;

/// <summary>
/// Frames and reads TURN ChannelData messages (RFC 8656 §12.4). Pure and allocation-free: the
/// application data is handed back as a view of the input, never copied.
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Channel Number        |            Length             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// /                       Application Data                        /
/// /                                                               /
/// |                                                               |
/// |                               +-------------------------------+
/// |                               |
/// +-------------------------------+
/// </code>
/// Length counts the application data only, not the header and not the padding; 0 is a valid length
/// (RFC 8656 §12.4).
/// </summary>
public static class ChannelDataReader
{
    /// <summary>
    /// Stream framing for TCP and TLS-over-TCP. RFC 8656 §12.5: over these transports "the ChannelData
    /// message MUST be padded to a multiple of four bytes in order to ensure the alignment of subsequent
    /// messages"; the padding is not in Length, so a message occupies 4 + Length rounded up to a multiple
    /// of 4. Advances <paramref name="buffer"/> only on <see cref="OperationStatus.Done"/>, and then past
    /// the message and its padding (whose content is not looked at). The declared length is checked
    /// against <see cref="ChannelDataLimits.MaxDataLength"/> as soon as the header is in, before any body
    /// is awaited; a bad first byte is rejected as soon as it is in.
    /// </summary>
    /// <remarks>
    /// A reserved channel number (0x5000-0x7FFF) is <see cref="OperationStatus.InvalidData"/>, not a frame
    /// to skip: Done always means <see cref="TurnChannel.IsValidNumber"/>(channel), so callers may index a
    /// 4096-entry table by <c>channel - TurnChannel.MinNumber</c> without a further check.
    /// </remarks>
    /// <param name="buffer">Received bytes; on Done, what follows the message.</param>
    /// <param name="limits">Bounds to enforce.</param>
    /// <param name="channel">The Channel Number field once the 4-byte header is in, else 0. Only on Done is it a valid number (<see cref="TurnChannel.IsValidNumber"/>).</param>
    /// <param name="data">On Done, exactly Length bytes of application data: a view of <paramref name="buffer"/>, valid until the caller releases those bytes.</param>
    /// <param name="error">Why the status is InvalidData; <see cref="ChannelDataError.None"/> otherwise.</param>
    public static OperationStatus TryRead(
        ref ReadOnlySequence<byte> buffer,
        in ChannelDataLimits limits,
        out ushort channel,
        out ReadOnlySequence<byte> data,
        out ChannelDataError error)
    {
        channel = 0;
        data = default;

        // The first segment may be shorter than the header, or even empty.
        Span<byte> prefix = stackalloc byte[TurnChannel.HeaderLength];
        scoped ReadOnlySpan<byte> header = buffer.FirstSpan;
        if (header.Length < TurnChannel.HeaderLength)
        {
            var available = (int)Math.Min(TurnChannel.HeaderLength, buffer.Length);
            buffer.Slice(0, available).CopyTo(prefix);
            header = prefix[..available];
        }

        if (header.Length < TurnChannel.HeaderLength)
        {
            // The first byte alone can already be rejected: waiting for more would hang on garbage.
            error = header.IsEmpty ? ChannelDataError.None : ClassifyFirstByte(header[0], limits);
            return error == ChannelDataError.None ? OperationStatus.NeedMoreData : OperationStatus.InvalidData;
        }

        error = ValidateHeader(header, limits, out channel, out var length);
        if (error != ChannelDataError.None)
        {
            return OperationStatus.InvalidData;
        }

        // RFC 8656 §12.5: "(4 + Length) rounded up to the nearest multiple of 4". At most 65,540: no overflow.
        var total = (TurnChannel.HeaderLength + length + 3) & ~3;
        if (buffer.Length < total)
        {
            return OperationStatus.NeedMoreData;
        }

        data = buffer.Slice(TurnChannel.HeaderLength, length);
        buffer = buffer.Slice(total);
        return OperationStatus.Done;
    }

    /// <summary>
    /// Reads one datagram (UDP). RFC 8656 §12.5: over UDP "the padding is not required but MAY be
    /// included", so bytes after the 4 + Length the header declares are accepted and ignored. RFC 8656
    /// §12.6: a datagram "too short to contain the claimed length of the ChannelData message" is
    /// silently discarded, reported here as <see cref="ChannelDataError.LengthMismatch"/>. Returns true
    /// with <paramref name="data"/> a view of exactly Length bytes of <paramref name="datagram"/>.
    /// </summary>
    /// <param name="datagram">One whole datagram.</param>
    /// <param name="limits">Bounds to enforce.</param>
    /// <param name="channel">The Channel Number field once the 4-byte header is in, else 0. Only on success is it a valid number (<see cref="TurnChannel.IsValidNumber"/>).</param>
    /// <param name="data">On success, exactly Length bytes of application data.</param>
    /// <param name="error">Why the datagram was not accepted; <see cref="ChannelDataError.None"/> on success.</param>
    public static bool TryRead(
        ReadOnlySpan<byte> datagram,
        in ChannelDataLimits limits,
        out ushort channel,
        out ReadOnlySpan<byte> data,
        out ChannelDataError error)
    {
        channel = 0;
        data = default;
        if (datagram.Length < TurnChannel.HeaderLength)
        {
            // Report what the first byte says if it is wrong, else that the header is cut short.
            error = datagram.IsEmpty ? ChannelDataError.None : ClassifyFirstByte(datagram[0], limits);
            if (error == ChannelDataError.None)
            {
                error = ChannelDataError.LengthMismatch;
            }

            return false;
        }

        // Same checks, in the same order, as the stream framer, so the transports agree on what is malformed.
        error = ValidateHeader(datagram, limits, out channel, out var length);
        if (error != ChannelDataError.None)
        {
            return false;
        }

        // RFC 8656 §12.6: too short for the claimed length: silently discarded.
        if (datagram.Length - TurnChannel.HeaderLength < length)
        {
            error = ChannelDataError.LengthMismatch;
            return false;
        }

        data = datagram.Slice(TurnChannel.HeaderLength, length);
        return true;
    }

    /// <summary>
    /// RFC 8656 §12 Table 3 (RFC 7983 §7): first bytes 64-79 are TURN channels. 80-127 share the 01
    /// prefix but are channel numbers 0x5000-0x7FFF, reserved by §12 Table 2; RFC 8656 §12.6: "If the
    /// message uses a value in the reserved range (0x5000 through 0xFFFF), then the message is
    /// silently discarded." First bytes from 128 up do not start with 01 and are not ChannelData at all.
    /// </summary>
    private static ChannelDataError ClassifyFirstByte(byte first, in ChannelDataLimits limits)
    {
        if (!TurnChannel.LooksLikeChannelData(first))
        {
            return ChannelDataError.NotChannelData;
        }

        return first >= (TurnChannel.MaxNumber + 1) >> 8 && !limits.AcceptRfc5766Channels ? ChannelDataError.ReservedChannel : ChannelDataError.None;
    }

    private static ChannelDataError ValidateHeader(ReadOnlySpan<byte> header, in ChannelDataLimits limits, out ushort channel, out int length)
    {
        channel = BinaryPrimitives.ReadUInt16BigEndian(header);
        length = BinaryPrimitives.ReadUInt16BigEndian(header[2..]);
        var error = ClassifyFirstByte(header[0], limits);
        if (error != ChannelDataError.None)
        {
            return error;
        }

        // Checked before the body is awaited: a declared length is never trusted further than the limit.
        return length > limits.MaxDataLength ? ChannelDataError.TooLarge : ChannelDataError.None;
    }
}
