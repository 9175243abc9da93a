using System.Buffers;
using System.Buffers.Binary;

namespace Relay.Protocol.Stun;

/// <summary>
/// Frames and parses STUN messages (RFC 8489 §5, §14). Pure and allocation-free: it never copies the
/// message and never allocates on a length taken from the wire.
/// </summary>
public static class StunMessageReader
{
    /// <summary>
    /// Stream framing for STUN over TCP/TLS (RFC 8489 §6.2.2: the header's length field delimits
    /// messages). Advances <paramref name="buffer"/> only on <see cref="OperationStatus.Done"/>.
    /// The declared length is checked against <see cref="StunReaderLimits.MaxMessageSize"/> as soon
    /// as the first four bytes are in, before any body is awaited.
    /// </summary>
    public static OperationStatus TryReadMessage(
        ref ReadOnlySequence<byte> buffer,
        in StunReaderLimits limits,
        out ReadOnlySequence<byte> message,
        out StunParseError error)
    {
        message = default;

        // The first segment may be shorter than the four bytes we need, or even empty.
        Span<byte> prefix = stackalloc byte[4];
        scoped ReadOnlySpan<byte> first = buffer.FirstSpan;
        if (first.Length < 4)
        {
            var available = (int)Math.Min(4, buffer.Length);
            buffer.Slice(0, available).CopyTo(prefix);
            first = prefix[..available];
        }

        if (first.Length < 4)
        {
            // A first byte with either top bit set can already be rejected: waiting would hang on garbage.
            if (!first.IsEmpty && (first[0] & 0xC0) != 0)
            {
                error = StunParseError.NotStun;
                return OperationStatus.InvalidData;
            }

            error = StunParseError.None;
            return OperationStatus.NeedMoreData;
        }

        error = ValidateTypeAndLength(first, limits, out var total);
        if (error != StunParseError.None)
        {
            return OperationStatus.InvalidData;
        }

        if (buffer.Length < total)
        {
            return OperationStatus.NeedMoreData;
        }

        message = buffer.Slice(0, total);
        buffer = buffer.Slice(total);
        return OperationStatus.Done;
    }

    /// <summary>
    /// Parses one whole message (a datagram, or a frame from <see cref="TryReadMessage"/> made
    /// contiguous). Returns <see cref="OperationStatus.NeedMoreData"/> for a strict prefix of a
    /// message, <see cref="OperationStatus.InvalidData"/> with a reason for anything malformed.
    /// </summary>
    public static OperationStatus TryParse(
        ReadOnlySpan<byte> source,
        in StunReaderLimits limits,
        out StunMessage message,
        out StunParseError error)
    {
        message = default;
        if (source.Length < 4)
        {
            if (!source.IsEmpty && (source[0] & 0xC0) != 0)
            {
                error = StunParseError.NotStun;
                return OperationStatus.InvalidData;
            }

            error = StunParseError.None;
            return OperationStatus.NeedMoreData;
        }

        // Validate as soon as the length field is in, exactly as the stream framer does, so a datagram
        // and a stream agree on what is malformed.
        error = ValidateTypeAndLength(source, limits, out var total);
        if (error != StunParseError.None)
        {
            return OperationStatus.InvalidData;
        }

        if (source.Length < total)
        {
            return OperationStatus.NeedMoreData;
        }

        if (source.Length > total)
        {
            error = StunParseError.LengthMismatch;
            return OperationStatus.InvalidData;
        }

        var header = StunHeader.Read(source);
        error = WalkAttributes(source, limits, out var layout);
        if (error != StunParseError.None)
        {
            return OperationStatus.InvalidData;
        }

        message = new StunMessage(source, header, layout);
        return OperationStatus.Done;
    }

    /// <summary>RFC 8489 §5: top two bits zero, length a multiple of four, within the configured bound.</summary>
    private static StunParseError ValidateTypeAndLength(ReadOnlySpan<byte> firstFour, in StunReaderLimits limits, out int total)
    {
        total = 0;
        if ((firstFour[0] & 0xC0) != 0)
        {
            return StunParseError.NotStun;
        }

        var length = BinaryPrimitives.ReadUInt16BigEndian(firstFour[2..]);
        if ((length & 3) != 0)
        {
            return StunParseError.LengthNotMultipleOfFour;
        }

        total = StunConstants.HeaderLength + length;
        return total > limits.MaxMessageSize ? StunParseError.TooLarge : StunParseError.None;
    }

    private static StunParseError WalkAttributes(ReadOnlySpan<byte> message, in StunReaderLimits limits, out StunMessageLayout layout)
    {
        layout = StunMessageLayout.Empty;
        var offset = StunConstants.HeaderLength;
        var count = 0;
        while (offset < message.Length)
        {
            if (message.Length - offset < StunConstants.AttributeHeaderLength)
            {
                return StunParseError.AttributeOverflow;
            }

            if (++count > limits.MaxAttributes)
            {
                return StunParseError.TooManyAttributes;
            }

            var type = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
            var length = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
            var valueOffset = offset + StunConstants.AttributeHeaderLength;

            // RFC 8489 §14: values are padded to a multiple of 4; the padding is not in the length.
            var padded = (length + 3) & ~3;
            if (padded > message.Length - valueOffset)
            {
                return StunParseError.AttributeOverflow;
            }

            if (layout.FingerprintOffset >= 0)
            {
                // RFC 8489 §14.7: FINGERPRINT, when present, MUST be the last attribute.
                return StunParseError.FingerprintNotLast;
            }

            // RFC 8489 §14.5/§14.6: attributes after the first integrity attribute, other than
            // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, MUST be ignored, so they are not judged either.
            var ignored = layout.ProcessedEnd >= 0
                && type != (ushort)StunAttributeType.MessageIntegritySha256
                && type != (ushort)StunAttributeType.Fingerprint;
            var value = message.Slice(valueOffset, length);
            if (!ignored && !StunAttributeRules.IsValid(type, value))
            {
                layout.InvalidAttributeType = type;
                return StunParseError.InvalidAttribute;
            }

            switch (ignored ? default : (StunAttributeType)type)
            {
                case StunAttributeType.MessageIntegrity when layout.MessageIntegrityOffset < 0 && layout.MessageIntegritySha256Offset < 0:
                    layout.MessageIntegrityOffset = offset;
                    break;
                case StunAttributeType.MessageIntegritySha256 when layout.MessageIntegritySha256Offset < 0:
                    layout.MessageIntegritySha256Offset = offset;
                    break;
                case StunAttributeType.Fingerprint:
                    layout.FingerprintOffset = offset;
                    break;
            }

            // RFC 8489 §14.5/§14.6: everything after the first integrity attribute is ignored except
            // MESSAGE-INTEGRITY-SHA256 (after MESSAGE-INTEGRITY only) and FINGERPRINT.
            if (layout.ProcessedEnd < 0 && (layout.MessageIntegrityOffset >= 0 || layout.MessageIntegritySha256Offset >= 0))
            {
                layout.ProcessedEnd = valueOffset + padded;
            }

            offset = valueOffset + padded;
        }

        layout.AttributeCount = count;
        if (layout.ProcessedEnd < 0)
        {
            layout.ProcessedEnd = message.Length;
        }

        return StunParseError.None;
    }
}

/// <summary>Offsets found while validating a message, so later look-ups need no second walk.</summary>
internal struct StunMessageLayout
{
    public static StunMessageLayout Empty => new()
    {
        MessageIntegrityOffset = -1,
        MessageIntegritySha256Offset = -1,
        FingerprintOffset = -1,
        ProcessedEnd = -1,
    };

    public int MessageIntegrityOffset;
    public int MessageIntegritySha256Offset;
    public int FingerprintOffset;

    /// <summary>Attributes that start at or past this offset are ignored, except integrity and fingerprint.</summary>
    public int ProcessedEnd;

    public int AttributeCount;
    public ushort InvalidAttributeType;
}
