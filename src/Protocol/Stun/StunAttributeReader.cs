using System.Buffers.Binary;

namespace Relay.Protocol.Stun;

/// <summary>
/// Typed decoding of attribute values. Callers pass values from a <see cref="StunMessage"/>, whose
/// validation already enforced each length rule, but every method re-checks cheaply so it is also
/// safe on raw input.
/// </summary>
public static class StunAttributeReader
{
    /// <summary>
    /// MAPPED-ADDRESS, ALTERNATE-SERVER, RESPONSE-ORIGIN, OTHER-ADDRESS (RFC 8489 §14.1).
    /// <code>
    /// |0 0 0 0 0 0 0 0|    Family     |           Port                |
    /// |                 Address (32 bits or 128 bits)                 |
    /// </code>
    /// </summary>
    public static bool TryReadAddress(ReadOnlySpan<byte> value, out StunAddress address)
    {
        address = default;
        var port = value.Length >= 4 ? BinaryPrimitives.ReadUInt16BigEndian(value[2..]) : (ushort)0;
        if (value.Length == 8 && value[1] == StunAddress.FamilyIPv4)
        {
            address = StunAddress.FromIPv4(value[4..], port);
            return true;
        }

        if (value.Length == 20 && value[1] == StunAddress.FamilyIPv6)
        {
            address = StunAddress.FromIPv6(value[4..], port);
            return true;
        }

        return false;
    }

    /// <summary>
    /// XOR-MAPPED-ADDRESS and TURN's XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS (RFC 8489 §14.2): the port is
    /// XOR'ed with the top 16 bits of the magic cookie, an IPv4 address with the cookie, an IPv6
    /// address with the cookie followed by the transaction id.
    /// </summary>
    public static bool TryReadXorAddress(ReadOnlySpan<byte> value, in StunHeader header, out StunAddress address)
    {
        address = default;
        if (value.Length < 4)
        {
            return false;
        }

        var port = (ushort)(BinaryPrimitives.ReadUInt16BigEndian(value[2..]) ^ (StunConstants.MagicCookie >> 16));
        Span<byte> mask = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(mask, StunConstants.MagicCookie);
        header.TransactionId.WriteTo(mask[4..]);
        Span<byte> bytes = stackalloc byte[16];
        if (value.Length == 8 && value[1] == StunAddress.FamilyIPv4)
        {
            for (var i = 0; i < 4; i++)
            {
                bytes[i] = (byte)(value[4 + i] ^ mask[i]);
            }

            address = StunAddress.FromIPv4(bytes, port);
            return true;
        }

        if (value.Length == 20 && value[1] == StunAddress.FamilyIPv6)
        {
            for (var i = 0; i < 16; i++)
            {
                bytes[i] = (byte)(value[4 + i] ^ mask[i]);
            }

            address = StunAddress.FromIPv6(bytes, port);
            return true;
        }

        return false;
    }

    /// <summary>ERROR-CODE (RFC 8489 §14.8): code = class * 100 + number, and the UTF-8 reason phrase.</summary>
    public static bool TryReadErrorCode(ReadOnlySpan<byte> value, out int code, out ReadOnlySpan<byte> reasonUtf8)
    {
        code = 0;
        reasonUtf8 = default;
        if (value.Length < 4)
        {
            return false;
        }

        code = ((value[2] & 0x07) * 100) + value[3];
        reasonUtf8 = value[4..];
        return true;
    }

    /// <summary>CHANGE-REQUEST (RFC 5780 §7.2): flag A (change IP) is 0x4, flag B (change port) is 0x2.</summary>
    public static bool TryReadChangeRequest(ReadOnlySpan<byte> value, out bool changeIp, out bool changePort)
    {
        changeIp = changePort = false;
        if (value.Length != 4)
        {
            return false;
        }

        var flags = BinaryPrimitives.ReadUInt32BigEndian(value);
        changeIp = (flags & 0x4) != 0;
        changePort = (flags & 0x2) != 0;
        return true;
    }

    /// <summary>A 32-bit attribute whose value is one 16-bit number followed by 16 bits of padding (RESPONSE-PORT, RFC 5780 §7.5).</summary>
    public static bool TryReadResponsePort(ReadOnlySpan<byte> value, out ushort port)
    {
        port = 0;
        if (value.Length != 4)
        {
            return false;
        }

        port = BinaryPrimitives.ReadUInt16BigEndian(value);
        return true;
    }

    /// <summary>A big-endian 32-bit value (LIFETIME, PRIORITY, CONNECTION-ID, ...).</summary>
    public static bool TryReadUInt32(ReadOnlySpan<byte> value, out uint result)
    {
        result = 0;
        if (value.Length != 4)
        {
            return false;
        }

        result = BinaryPrimitives.ReadUInt32BigEndian(value);
        return true;
    }

    /// <summary>UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): copies up to <paramref name="destination"/>.Length types.</summary>
    public static int ReadUnknownAttributes(ReadOnlySpan<byte> value, Span<ushort> destination)
    {
        var count = Math.Min(value.Length / 2, destination.Length);
        for (var i = 0; i < count; i++)
        {
            destination[i] = BinaryPrimitives.ReadUInt16BigEndian(value[(i * 2)..]);
        }

        return count;
    }

    /// <summary>
    /// PASSWORD-ALGORITHM (RFC 8489 §14.12): the algorithm and its parameters.
    /// PASSWORD-ALGORITHMS (§14.11) is a list of the same entries; walk it with <see cref="TryReadPasswordAlgorithmEntry"/>.
    /// </summary>
    public static bool TryReadPasswordAlgorithm(ReadOnlySpan<byte> value, out StunPasswordAlgorithm algorithm, out ReadOnlySpan<byte> parameters)
    {
        var offset = 0;
        return TryReadPasswordAlgorithmEntry(value, ref offset, out algorithm, out parameters);
    }

    /// <summary>Reads the entry at <paramref name="offset"/> and moves past it and its padding.</summary>
    public static bool TryReadPasswordAlgorithmEntry(ReadOnlySpan<byte> value, scoped ref int offset, out StunPasswordAlgorithm algorithm, out ReadOnlySpan<byte> parameters)
    {
        algorithm = default;
        parameters = default;
        if (offset < 0 || value.Length - offset < 4)
        {
            return false;
        }

        algorithm = (StunPasswordAlgorithm)BinaryPrimitives.ReadUInt16BigEndian(value[offset..]);
        var length = BinaryPrimitives.ReadUInt16BigEndian(value[(offset + 2)..]);
        if (length > value.Length - offset - 4)
        {
            return false;
        }

        parameters = value.Slice(offset + 4, length);
        offset = Math.Min(value.Length, offset + 4 + ((length + 3) & ~3));
        return true;
    }
}
