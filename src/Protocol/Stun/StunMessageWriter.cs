using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.IO.Hashing;

namespace Relay.Protocol.Stun;

/// <summary>
/// Writes a STUN message (RFC 8489 §5, §14) into a caller-owned buffer, keeping the header's length
/// field current after each attribute so that integrity and fingerprint can be appended at any point.
/// Allocation-free. Running out of room is a sizing bug in the caller, so it throws.
/// </summary>
public ref struct StunMessageWriter
{
    private readonly Span<byte> _buffer;
    private readonly StunHeader _header;
    private int _position;

    /// <summary>Starts a message: writes the 20-byte header.</summary>
    /// <param name="destination">Where the message goes.</param>
    /// <param name="messageType">Composed type; see <see cref="StunHeader.ComposeType(StunMethod, StunClass)"/>.</param>
    /// <param name="transactionId">Transaction id.</param>
    /// <param name="magicCookie">The cookie; a response to an RFC 3489 request echoes that request's first id word here instead.</param>
    public StunMessageWriter(Span<byte> destination, ushort messageType, StunTransactionId transactionId, uint magicCookie = StunConstants.MagicCookie)
    {
        if (destination.Length < StunConstants.HeaderLength)
        {
            ThrowTooSmall();
        }

        _buffer = destination;
        _header = new StunHeader(messageType, 0, magicCookie, transactionId);
        BinaryPrimitives.WriteUInt16BigEndian(destination, messageType);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], magicCookie);
        transactionId.WriteTo(destination[8..]);
        _position = StunConstants.HeaderLength;
    }

    /// <summary>Bytes written so far.</summary>
    public readonly int Length => _position;

    /// <summary>The message so far.</summary>
    public readonly ReadOnlySpan<byte> Written => _buffer[.._position];

    /// <summary>Reserves an attribute of <paramref name="length"/> bytes, zeroes its padding, and returns its value to fill.</summary>
    public Span<byte> BeginAttribute(ushort type, int length)
    {
        var padded = (length + 3) & ~3;
        var needed = StunConstants.AttributeHeaderLength + padded;
        if ((uint)length > ushort.MaxValue || _buffer.Length - _position < needed || _position + needed - StunConstants.HeaderLength > ushort.MaxValue)
        {
            ThrowTooSmall();
        }

        var start = _position;
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[start..], type);
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[(start + 2)..], (ushort)length);

        // RFC 8489 §14: padding bytes are sent as zero so they never leak stale buffer contents.
        _buffer.Slice(start + StunConstants.AttributeHeaderLength + length, padded - length).Clear();
        _position = start + needed;
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[2..], (ushort)(_position - StunConstants.HeaderLength));
        return _buffer.Slice(start + StunConstants.AttributeHeaderLength, length);
    }

    /// <summary>An attribute with an opaque value.</summary>
    public void WriteAttribute(StunAttributeType type, scoped ReadOnlySpan<byte> value) => WriteAttribute((ushort)type, value);

    /// <summary>An attribute with an opaque value, any type (pass-through of unknown attributes).</summary>
    public void WriteAttribute(ushort type, scoped ReadOnlySpan<byte> value) => value.CopyTo(BeginAttribute(type, value.Length));

    /// <summary>A big-endian 32-bit attribute.</summary>
    public void WriteUInt32(StunAttributeType type, uint value) =>
        BinaryPrimitives.WriteUInt32BigEndian(BeginAttribute((ushort)type, 4), value);

    /// <summary>MAPPED-ADDRESS and the other plain address attributes (RFC 8489 §14.1).</summary>
    public void WriteAddress(StunAttributeType type, in StunAddress address)
    {
        var value = BeginAttribute((ushort)type, 4 + address.AddressLength);
        value[0] = 0;
        value[1] = address.IsIPv4 ? StunAddress.FamilyIPv4 : StunAddress.FamilyIPv6;
        BinaryPrimitives.WriteUInt16BigEndian(value[2..], address.Port);
        address.WriteAddressBytes(value[4..]);
    }

    /// <summary>XOR-MAPPED-ADDRESS and the TURN XOR address attributes (RFC 8489 §14.2).</summary>
    public void WriteXorAddress(StunAttributeType type, in StunAddress address)
    {
        var value = BeginAttribute((ushort)type, 4 + address.AddressLength);
        value[0] = 0;
        value[1] = address.IsIPv4 ? StunAddress.FamilyIPv4 : StunAddress.FamilyIPv6;
        BinaryPrimitives.WriteUInt16BigEndian(value[2..], (ushort)(address.Port ^ (StunConstants.MagicCookie >> 16)));
        var bytes = value[4..];
        address.WriteAddressBytes(bytes);
        Span<byte> mask = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(mask, StunConstants.MagicCookie);
        _header.TransactionId.WriteTo(mask[4..]);
        for (var i = 0; i < bytes.Length; i++)
        {
            bytes[i] ^= mask[i];
        }
    }

    /// <summary>ERROR-CODE (RFC 8489 §14.8).</summary>
    public void WriteErrorCode(int code, ReadOnlySpan<byte> reasonUtf8)
    {
        if (code is < 300 or > 699 || reasonUtf8.Length > StunConstants.MaxQuotedStringBytes)
        {
            ThrowArgument();
        }

        var value = BeginAttribute((ushort)StunAttributeType.ErrorCode, 4 + reasonUtf8.Length);
        value[0] = 0;
        value[1] = 0;
        value[2] = (byte)(code / 100);
        value[3] = (byte)(code % 100);
        reasonUtf8.CopyTo(value[4..]);
    }

    /// <summary>UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).</summary>
    public void WriteUnknownAttributes(ReadOnlySpan<ushort> types)
    {
        var value = BeginAttribute((ushort)StunAttributeType.UnknownAttributes, types.Length * 2);
        for (var i = 0; i < types.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(value[(i * 2)..], types[i]);
        }
    }

    /// <summary>CHANGE-REQUEST (RFC 5780 §7.2).</summary>
    public void WriteChangeRequest(bool changeIp, bool changePort) =>
        WriteUInt32(StunAttributeType.ChangeRequest, (changeIp ? 0x4u : 0) | (changePort ? 0x2u : 0));

    /// <summary>RESPONSE-PORT (RFC 5780 §7.5).</summary>
    public void WriteResponsePort(ushort port)
    {
        var value = BeginAttribute((ushort)StunAttributeType.ResponsePort, 4);
        BinaryPrimitives.WriteUInt16BigEndian(value, port);
        BinaryPrimitives.WriteUInt16BigEndian(value[2..], 0);
    }

    /// <summary>PADDING (RFC 5780 §7.6): zero bytes, used to probe fragmentation.</summary>
    public void WritePadding(int length) => BeginAttribute((ushort)StunAttributeType.Padding, length).Clear();

    /// <summary>PASSWORD-ALGORITHM (RFC 8489 §14.12), with no parameters as both defined algorithms need none.</summary>
    public void WritePasswordAlgorithm(StunPasswordAlgorithm algorithm)
    {
        var value = BeginAttribute((ushort)StunAttributeType.PasswordAlgorithm, 4);
        BinaryPrimitives.WriteUInt16BigEndian(value, (ushort)algorithm);
        BinaryPrimitives.WriteUInt16BigEndian(value[2..], 0);
    }

    /// <summary>PASSWORD-ALGORITHMS (RFC 8489 §14.11), in order of preference, without parameters.</summary>
    public void WritePasswordAlgorithms(ReadOnlySpan<StunPasswordAlgorithm> algorithms)
    {
        if (algorithms.IsEmpty)
        {
            // RFC 8489 §14.11: the list is never empty, and the reader rejects one that is.
            ThrowArgument();
        }

        var value = BeginAttribute((ushort)StunAttributeType.PasswordAlgorithms, algorithms.Length * 4);
        for (var i = 0; i < algorithms.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(value[(i * 4)..], (ushort)algorithms[i]);
            BinaryPrimitives.WriteUInt16BigEndian(value[((i * 4) + 2)..], 0);
        }
    }

    /// <summary>MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 over everything so far, with the length field covering this attribute.</summary>
    public void WriteMessageIntegrity(ReadOnlySpan<byte> key)
    {
        var start = _position;
        var value = BeginAttribute((ushort)StunAttributeType.MessageIntegrity, StunConstants.MessageIntegrityLength);
        StunIntegrity.ComputeSha1(_buffer[..start], _position, key, value);
    }

    /// <summary>MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full 32 bytes unless truncated by <paramref name="length"/>.</summary>
    public void WriteMessageIntegritySha256(ReadOnlySpan<byte> key, int length = StunConstants.MessageIntegritySha256Length)
    {
        if (length is < 16 or > 32 || (length & 3) != 0)
        {
            ThrowArgument();
        }

        var start = _position;
        var value = BeginAttribute((ushort)StunAttributeType.MessageIntegritySha256, length);
        Span<byte> mac = stackalloc byte[StunConstants.MessageIntegritySha256Length];
        StunIntegrity.ComputeSha256(_buffer[..start], _position, key, mac);
        mac[..length].CopyTo(value);
    }

    /// <summary>
    /// FINGERPRINT (RFC 8489 §14.7), the last attribute: CRC-32 of everything before it, XOR 0x5354554E. The
    /// CRC is ITU V.42's (the IEEE 802.3 polynomial, reflected), which is <see cref="Crc32"/>.
    /// </summary>
    public void WriteFingerprint()
    {
        var start = _position;
        var value = BeginAttribute((ushort)StunAttributeType.Fingerprint, StunConstants.FingerprintLength);
        BinaryPrimitives.WriteUInt32BigEndian(value, Crc32.HashToUInt32(_buffer[..start]) ^ StunConstants.FingerprintXor);
    }

    [DoesNotReturn]
    private static void ThrowTooSmall() => throw new ArgumentException("The destination is too small for this STUN message.");

    [DoesNotReturn]
    private static void ThrowArgument() => throw new ArgumentOutOfRangeException(null, "Value outside the range the RFC allows.");
}
