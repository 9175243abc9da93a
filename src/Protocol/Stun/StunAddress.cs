using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Relay.Protocol.Stun;

/// <summary>
/// A transport address as carried by MAPPED-ADDRESS and its relatives (RFC 8489 §14.1), held by value
/// so that decoding and encoding never allocate.
/// </summary>
public readonly struct StunAddress : IEquatable<StunAddress>
{
    /// <summary>Family byte for IPv4 (RFC 8489 §14.1).</summary>
    public const byte FamilyIPv4 = 0x01;

    /// <summary>Family byte for IPv6 (RFC 8489 §14.1).</summary>
    public const byte FamilyIPv6 = 0x02;

    // Network byte order: for IPv4 only the top 32 bits of _high are used.
    private readonly ulong _high;
    private readonly ulong _low;

    private StunAddress(AddressFamily family, ulong high, ulong low, ushort port)
    {
        Family = family;
        _high = high;
        _low = low;
        Port = port;
    }

    /// <summary>InterNetwork or InterNetworkV6; <see cref="AddressFamily.Unspecified"/> for default.</summary>
    public AddressFamily Family { get; }

    /// <summary>Port in host order.</summary>
    public ushort Port { get; }

    /// <summary>True for IPv4.</summary>
    public bool IsIPv4 => Family == AddressFamily.InterNetwork;

    /// <summary>Wire length of the address bytes: 4 or 16.</summary>
    public int AddressLength => IsIPv4 ? 4 : 16;

    /// <summary>An IPv4 address from its 4 network-order bytes.</summary>
    public static StunAddress FromIPv4(ReadOnlySpan<byte> address, ushort port) =>
        new(AddressFamily.InterNetwork, (ulong)BinaryPrimitives.ReadUInt32BigEndian(address) << 32, 0, port);

    /// <summary>An IPv6 address from its 16 network-order bytes.</summary>
    public static StunAddress FromIPv6(ReadOnlySpan<byte> address, ushort port) => new(
        AddressFamily.InterNetworkV6,
        BinaryPrimitives.ReadUInt64BigEndian(address),
        BinaryPrimitives.ReadUInt64BigEndian(address[8..]),
        port);

    /// <summary>
    /// Reads the socket's native address without allocating. IPv4-mapped IPv6 addresses (from a
    /// dual-mode socket) are reported as IPv4, because that is the family the client really used.
    /// </summary>
    public static StunAddress FromSocketAddress(SocketAddress socketAddress) =>
        FromNativeSocketAddress(socketAddress.Buffer.Span, socketAddress.Family);

    /// <summary>
    /// Reads a native <c>sockaddr_in</c>/<c>sockaddr_in6</c> (port at offset 2, IPv4 address at 4, IPv6
    /// address at 8), as filled in by <c>recvfrom</c>/<c>recvmmsg</c> or held by <see cref="SocketAddress"/>.
    /// </summary>
    public static StunAddress FromNativeSocketAddress(ReadOnlySpan<byte> buffer, AddressFamily family)
    {
        if (buffer.Length < 8)
        {
            return default;
        }

        var port = BinaryPrimitives.ReadUInt16BigEndian(buffer[2..]);
        if (family == AddressFamily.InterNetwork)
        {
            return FromIPv4(buffer.Slice(4, 4), port);
        }

        if (family == AddressFamily.InterNetworkV6 && buffer.Length >= 24)
        {
            var address = buffer.Slice(8, 16);
            if (BinaryPrimitives.ReadUInt64BigEndian(address) == 0 && BinaryPrimitives.ReadUInt32BigEndian(address[8..]) == 0xFFFF)
            {
                return FromIPv4(address[12..], port);
            }

            return FromIPv6(address, port);
        }

        return default;
    }

    /// <summary>From an <see cref="IPEndPoint"/>; allocates only for IPv6 in older runtimes' GetAddressBytes paths.</summary>
    public static StunAddress FromEndPoint(IPEndPoint endPoint)
    {
        var address = endPoint.Address.IsIPv4MappedToIPv6 ? endPoint.Address.MapToIPv4() : endPoint.Address;
        Span<byte> bytes = stackalloc byte[16];
        if (!address.TryWriteBytes(bytes, out var written))
        {
            return default;
        }

        return written == 4 ? FromIPv4(bytes[..4], (ushort)endPoint.Port) : FromIPv6(bytes, (ushort)endPoint.Port);
    }

    /// <summary>Writes the 4 or 16 network-order address bytes.</summary>
    public int WriteAddressBytes(Span<byte> destination)
    {
        if (IsIPv4)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)(_high >> 32));
            return 4;
        }

        BinaryPrimitives.WriteUInt64BigEndian(destination, _high);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], _low);
        return 16;
    }

    /// <summary>Same address, another port.</summary>
    public StunAddress WithPort(ushort port) => new(Family, _high, _low, port);

    /// <summary>Fills a socket address of the matching family in place, for sending without allocating.</summary>
    public void WriteTo(SocketAddress destination)
    {
        var buffer = destination.Buffer.Span;
        BinaryPrimitives.WriteUInt16BigEndian(buffer[2..], Port);
        if (IsIPv4)
        {
            WriteAddressBytes(buffer.Slice(4, 4));
        }
        else
        {
            buffer.Slice(4, 4).Clear(); // flow info
            WriteAddressBytes(buffer.Slice(8, 16));
            buffer.Slice(24, 4).Clear(); // scope id
        }
    }

    /// <summary>Allocating conversion, for logs, tests and clients.</summary>
    public IPEndPoint ToIPEndPoint()
    {
        Span<byte> bytes = stackalloc byte[16];
        var length = WriteAddressBytes(bytes);
        return new IPEndPoint(new IPAddress(bytes[..length]), Port);
    }

    /// <inheritdoc />
    public bool Equals(StunAddress other) =>
        Family == other.Family && _high == other._high && _low == other._low && Port == other.Port;

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is StunAddress other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Family, _high, _low, Port);

    /// <summary>Same address family and bytes, ignoring port.</summary>
    public bool SameHost(StunAddress other) => Family == other.Family && _high == other._high && _low == other._low;

    /// <inheritdoc />
    public override string ToString() => Family == AddressFamily.Unspecified ? "(none)" : ToIPEndPoint().ToString();

    /// <summary>Equality.</summary>
    public static bool operator ==(StunAddress left, StunAddress right) => left.Equals(right);

    /// <summary>Inequality.</summary>
    public static bool operator !=(StunAddress left, StunAddress right) => !left.Equals(right);
}
