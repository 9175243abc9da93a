using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.Server.Turn;

/// <summary>
/// A CIDR range held as masks, so that matching a peer is two ANDs and two compares. IPv4 ranges
/// live in the low 32 bits of <see cref="Low"/>; they only ever match IPv4 addresses (including
/// IPv4 embedded in IPv6, which <see cref="TurnPeerPolicy"/> extracts first). An IPv6 range therefore
/// never matches IPv4 by accident: "::/0" in DeniedPeers means "all IPv6", not "everything".
/// </summary>
internal readonly struct TurnPeerRange : IEquatable<TurnPeerRange>
{
    private TurnPeerRange(bool isIPv4, ulong high, ulong low, int prefixLength)
    {
        IsIPv4 = isIPv4;
        PrefixLength = prefixLength;
        var bits = isIPv4 ? prefixLength + 96 : prefixLength;
        MaskHigh = bits >= 64 ? ulong.MaxValue : bits == 0 ? 0 : ulong.MaxValue << (64 - bits);
        MaskLow = bits <= 64 ? 0 : bits >= 128 ? ulong.MaxValue : ulong.MaxValue << (128 - bits);
        High = high & MaskHigh;
        Low = low & MaskLow;
    }

    /// <summary>True for an IPv4 range.</summary>
    public bool IsIPv4 { get; }

    /// <summary>Prefix length within the family: 0-32 or 0-128.</summary>
    public int PrefixLength { get; }

    /// <summary>Network bits 0-63 (zero for IPv4).</summary>
    public ulong High { get; }

    /// <summary>Network bits 64-127; for IPv4 the address is in the low 32 bits.</summary>
    public ulong Low { get; }

    /// <summary>Mask over <see cref="High"/>.</summary>
    public ulong MaskHigh { get; }

    /// <summary>Mask over <see cref="Low"/>.</summary>
    public ulong MaskLow { get; }

    /// <summary>An IPv4 range from a host-order address.</summary>
    public static TurnPeerRange IPv4(uint address, int prefixLength) => new(true, 0, address, prefixLength);

    /// <summary>An IPv6 range from its two network-order halves.</summary>
    public static TurnPeerRange IPv6(ulong high, ulong low, int prefixLength) => new(false, high, low, prefixLength);

    /// <summary>A single address (/32 or /128); IPv4-mapped IPv6 becomes IPv4.</summary>
    public static TurnPeerRange Host(IPAddress address) =>
        RawHost(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address);

    private static TurnPeerRange RawHost(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var written);
        return written == 4
            ? IPv4(BinaryPrimitives.ReadUInt32BigEndian(bytes), 32)
            : IPv6(BinaryPrimitives.ReadUInt64BigEndian(bytes), BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]), 128);
    }

    /// <summary>True when an IPv4 address (host order) is inside this IPv4 range.</summary>
    public bool Contains(uint ipv4) => IsIPv4 && (ipv4 & MaskLow) == Low;

    /// <summary>True when an IPv6 address is inside this IPv6 range.</summary>
    public bool Contains(ulong high, ulong low) => !IsIPv4 && (high & MaskHigh) == High && (low & MaskLow) == Low;

    /// <summary>
    /// Parses <c>address/prefix</c> or a bare address (a host: /32 or /128); an IPv4-mapped range of
    /// /96 or longer becomes the IPv4 range it spells. Host bits beyond the prefix are an error, as in
    /// <see cref="IPNetwork.TryParse(string, out IPNetwork)"/>: "10.0.0.1/8" is more likely a typo for
    /// a host than a wish for all of 10/8. Zone ids ("fe80::1%eth0") are refused: a peer policy has no
    /// interfaces.
    /// </summary>
    public static bool TryParse(string? text, out TurnPeerRange range)
    {
        range = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var span = text.AsSpan().Trim();
        var slash = span.IndexOf('/');
        var addressText = slash < 0 ? span : span[..slash];
        if (addressText.Contains('%') || !IPAddress.TryParse(addressText, out var address))
        {
            return false;
        }

        // IPAddress.TryParse takes "10" and "10.1" as IPv4 shorthands (inet_aton); configs are written
        // by people, so demand the dotted quad they surely meant.
        var isIPv4 = address.AddressFamily == AddressFamily.InterNetwork;
        if (isIPv4 && addressText.Count('.') != 3)
        {
            return false;
        }

        var maxPrefix = isIPv4 ? 32 : 128;
        var prefix = maxPrefix;
        if (slash >= 0)
        {
            var prefixText = span[(slash + 1)..];
            if (prefixText.Length is 0 or > 3 || prefixText.ContainsAnyExceptInRange('0', '9')
                || !int.TryParse(prefixText, NumberStyles.None, CultureInfo.InvariantCulture, out prefix) || prefix > maxPrefix)
            {
                return false;
            }
        }

        // An IPv4-mapped range is the IPv4 range it spells ("::ffff:10.0.0.0/104" is 10.0.0.0/8), as
        // the policy judges mapped peers as IPv4. A shorter prefix reaches past ::ffff:0:0/96 and so
        // stays an IPv6 range.
        var host = RawHost(address);
        if (address.IsIPv4MappedToIPv6 && prefix >= 96)
        {
            isIPv4 = true;
            prefix -= 96;
        }

        var candidate = isIPv4 ? IPv4((uint)host.Low, prefix) : IPv6(host.High, host.Low, prefix);
        if (candidate.High != (isIPv4 ? 0 : host.High) || candidate.Low != (isIPv4 ? (uint)host.Low : host.Low))
        {
            return false;
        }

        range = candidate;
        return true;
    }

    /// <inheritdoc />
    public bool Equals(TurnPeerRange other) =>
        IsIPv4 == other.IsIPv4 && PrefixLength == other.PrefixLength && High == other.High && Low == other.Low;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is TurnPeerRange other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(IsIPv4, PrefixLength, High, Low);

    /// <inheritdoc />
    public override string ToString()
    {
        Span<byte> bytes = stackalloc byte[16];
        if (IsIPv4)
        {
            BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)Low);
            return $"{new IPAddress(bytes[..4])}/{PrefixLength}";
        }

        BinaryPrimitives.WriteUInt64BigEndian(bytes, High);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], Low);
        return $"{new IPAddress(bytes)}/{PrefixLength}";
    }

    /// <summary>Equality.</summary>
    public static bool operator ==(TurnPeerRange left, TurnPeerRange right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(TurnPeerRange left, TurnPeerRange right) => !left.Equals(right);
}
