using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;

namespace Relay.Protocol.Stun;

/// <summary>
/// A validated STUN message: a view over the caller's bytes, valid only as long as they are. The
/// default value (what a failed parse leaves in its out parameter) has no attributes: attribute
/// offsets are never below the 20-byte header, so 0 reads as "absent".
/// Produced by <see cref="StunMessageReader.TryParse"/>; every attribute it yields has already been
/// bounds-checked and length-checked against its RFC.
/// </summary>
public readonly ref struct StunMessage
{
    private readonly StunMessageLayout _layout;

    internal StunMessage(ReadOnlySpan<byte> raw, StunHeader header, StunMessageLayout layout)
    {
        Raw = raw;
        Header = header;
        _layout = layout;
    }

    /// <summary>The whole message, header included.</summary>
    public ReadOnlySpan<byte> Raw { get; }

    /// <summary>The parsed header.</summary>
    public StunHeader Header { get; }

    /// <summary>Number of attributes, including ignored ones.</summary>
    public int AttributeCount => _layout.AttributeCount;

    /// <summary>True if a MESSAGE-INTEGRITY attribute is present.</summary>
    public bool HasMessageIntegrity => _layout.MessageIntegrityOffset >= StunConstants.HeaderLength;

    /// <summary>True if a MESSAGE-INTEGRITY-SHA256 attribute is present.</summary>
    public bool HasMessageIntegritySha256 => _layout.MessageIntegritySha256Offset >= StunConstants.HeaderLength;

    /// <summary>True if a FINGERPRINT attribute is present (always the last one).</summary>
    public bool HasFingerprint => _layout.FingerprintOffset >= StunConstants.HeaderLength;

    /// <summary>Enumerates the attributes a receiver processes, in order (RFC 8489 §14.5: those after an integrity attribute, other than the integrity attributes and FINGERPRINT, are skipped).</summary>
    public StunAttributeEnumerator GetEnumerator() => new(Raw, _layout.ProcessedEnd);

    /// <summary>Enumerates every attribute, ignored ones included; for diagnostics and pass-through.</summary>
    public StunAttributeEnumerator EnumerateAll() => new(Raw, Raw.Length);

    /// <summary>The first processed occurrence of an attribute (RFC 8489 §14: later duplicates are ignored).</summary>
    public bool TryGetAttribute(StunAttributeType type, out ReadOnlySpan<byte> value)
    {
        foreach (var attribute in this)
        {
            if (attribute.Type == (ushort)type)
            {
                value = attribute.Value;
                return true;
            }
        }

        value = default;
        return false;
    }

    /// <summary>True if the attribute is present among the processed ones.</summary>
    public bool HasAttribute(StunAttributeType type) => TryGetAttribute(type, out _);

    /// <summary>
    /// Collects comprehension-required attribute types (0x0000-0x7FFF) that are not in
    /// <paramref name="understood"/>, for a 420 response's UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1.1).
    /// Returns how many were written; duplicates are listed once.
    /// </summary>
    public int CollectUnknownComprehensionRequired(ReadOnlySpan<ushort> understood, Span<ushort> unknown)
    {
        var count = 0;
        foreach (var attribute in this)
        {
            var type = attribute.Type;
            if (!StunAttributeTypes.IsComprehensionRequired(type) || understood.Contains(type) || unknown[..count].Contains(type))
            {
                continue;
            }

            if (count == unknown.Length)
            {
                break;
            }

            unknown[count++] = type;
        }

        return count;
    }

    /// <summary>Checks FINGERPRINT (RFC 8489 §14.7). False if absent or wrong.</summary>
    public bool VerifyFingerprint()
    {
        var offset = _layout.FingerprintOffset;
        if (offset < StunConstants.HeaderLength)
        {
            return false;
        }

        var expected = Crc32.HashToUInt32(Raw[..offset]) ^ StunConstants.FingerprintXor;
        return BinaryPrimitives.ReadUInt32BigEndian(Raw[(offset + StunConstants.AttributeHeaderLength)..]) == expected;
    }

    /// <summary>Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) against a key. False if absent or wrong.</summary>
    public bool VerifyMessageIntegrity(ReadOnlySpan<byte> key)
    {
        var offset = _layout.MessageIntegrityOffset;
        if (offset < StunConstants.HeaderLength)
        {
            return false;
        }

        Span<byte> mac = stackalloc byte[StunConstants.MessageIntegrityLength];
        StunIntegrity.ComputeSha1(Raw[..offset], offset + StunConstants.AttributeHeaderLength + StunConstants.MessageIntegrityLength, key, mac);
        return CryptographicOperations.FixedTimeEquals(mac, Raw.Slice(offset + StunConstants.AttributeHeaderLength, StunConstants.MessageIntegrityLength));
    }

    /// <summary>Checks MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), honouring truncation. False if absent or wrong.</summary>
    public bool VerifyMessageIntegritySha256(ReadOnlySpan<byte> key)
    {
        var offset = _layout.MessageIntegritySha256Offset;
        if (offset < StunConstants.HeaderLength)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadUInt16BigEndian(Raw[(offset + 2)..]);
        Span<byte> mac = stackalloc byte[StunConstants.MessageIntegritySha256Length];
        StunIntegrity.ComputeSha256(Raw[..offset], offset + StunConstants.AttributeHeaderLength + length, key, mac);
        return CryptographicOperations.FixedTimeEquals(mac[..length], Raw.Slice(offset + StunConstants.AttributeHeaderLength, length));
    }
}

/// <summary>One attribute: a view into the message.</summary>
public readonly ref struct StunAttribute
{
    internal StunAttribute(ushort type, ReadOnlySpan<byte> value, int offset)
    {
        Type = type;
        Value = value;
        Offset = offset;
    }

    /// <summary>Raw type; compare with <see cref="StunAttributeType"/>.</summary>
    public ushort Type { get; }

    /// <summary>Value without padding.</summary>
    public ReadOnlySpan<byte> Value { get; }

    /// <summary>Offset of the attribute header within the message.</summary>
    public int Offset { get; }
}

/// <summary>Walks attributes of an already validated message.</summary>
public ref struct StunAttributeEnumerator
{
    private readonly ReadOnlySpan<byte> _message;
    private readonly int _processedEnd;
    private int _next;

    internal StunAttributeEnumerator(ReadOnlySpan<byte> message, int processedEnd)
    {
        _message = message;
        _processedEnd = processedEnd;
        _next = StunConstants.HeaderLength;
        Current = default;
    }

    /// <summary>The current attribute.</summary>
    public StunAttribute Current { get; private set; }

    /// <summary>Advances; validation already guaranteed every attribute is in bounds.</summary>
    public bool MoveNext()
    {
        while (_next < _message.Length)
        {
            var offset = _next;
            var type = BinaryPrimitives.ReadUInt16BigEndian(_message[offset..]);
            var length = BinaryPrimitives.ReadUInt16BigEndian(_message[(offset + 2)..]);
            _next = offset + StunConstants.AttributeHeaderLength + ((length + 3) & ~3);
            if (offset >= _processedEnd
                && type != (ushort)StunAttributeType.MessageIntegritySha256
                && type != (ushort)StunAttributeType.Fingerprint)
            {
                continue;
            }

            Current = new StunAttribute(type, _message.Slice(offset + StunConstants.AttributeHeaderLength, length), offset);
            return true;
        }

        return false;
    }

    /// <summary>Enables foreach.</summary>
    public readonly StunAttributeEnumerator GetEnumerator() => this;
}

/// <summary>MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256 computation (RFC 8489 §14.5, §14.6).</summary>
internal static class StunIntegrity
{
    // Messages up to this size are hashed from a stack copy; larger ones rent from the pool.
    private const int StackCopyLimit = 1536;

    /// <summary>
    /// HMAC over <paramref name="prefix"/> (header and the attributes before the integrity attribute)
    /// with the header's length field replaced by one that ends at the integrity attribute, as the RFC
    /// requires. The prefix is copied because the caller's message is read-only.
    /// </summary>
    public static void ComputeSha1(ReadOnlySpan<byte> prefix, int lengthThroughIntegrity, ReadOnlySpan<byte> key, Span<byte> destination) =>
        Compute(prefix, lengthThroughIntegrity, key, destination, sha256: false);

    public static void ComputeSha256(ReadOnlySpan<byte> prefix, int lengthThroughIntegrity, ReadOnlySpan<byte> key, Span<byte> destination) =>
        Compute(prefix, lengthThroughIntegrity, key, destination, sha256: true);

    private static void Compute(ReadOnlySpan<byte> prefix, int lengthThroughIntegrity, ReadOnlySpan<byte> key, Span<byte> destination, bool sha256)
    {
        byte[]? rented = null;
        var copy = prefix.Length <= StackCopyLimit
            ? stackalloc byte[StackCopyLimit]
            : (rented = ArrayPool<byte>.Shared.Rent(prefix.Length));
        try
        {
            copy = copy[..prefix.Length];
            prefix.CopyTo(copy);
            BinaryPrimitives.WriteUInt16BigEndian(copy[2..], (ushort)(lengthThroughIntegrity - StunConstants.HeaderLength));
            if (sha256)
            {
                HMACSHA256.HashData(key, copy, destination);
            }
            else
            {
#pragma warning disable CA5350 // RFC 8489 §14.5 mandates HMAC-SHA1 for MESSAGE-INTEGRITY
                HMACSHA1.HashData(key, copy, destination);
#pragma warning restore CA5350
            }
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }
}
