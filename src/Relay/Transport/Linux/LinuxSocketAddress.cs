using System.Buffers.Binary;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Server.Transport.Linux;

/// <summary>
/// Native sockaddr_in/sockaddr_in6 for a <see cref="StunAddress"/>, for sendto(2) and sendmmsg(2). Kept
/// apart from the P/Invoke declarations, which depend on nothing but the runtime and are shared with the
/// load generator.
/// </summary>
internal static class LinuxSocketAddress
{
    /// <summary>
    /// Writes the native sockaddr for <paramref name="address"/> as a socket of <paramref name="socketFamily"/>
    /// expects it: an IPv4 peer on an IPv6 (dual-mode) socket becomes ::ffff:a.b.c.d. Returns its length.
    /// </summary>
    public static int Write(in StunAddress address, AddressFamily socketFamily, Span<byte> destination)
    {
        if (socketFamily == AddressFamily.InterNetwork)
        {
            destination[..LinuxEpoll.SockaddrInLength].Clear();
            BinaryPrimitives.WriteUInt16LittleEndian(destination, LinuxEpoll.AfInet);
            BinaryPrimitives.WriteUInt16BigEndian(destination[2..], address.Port);
            address.WriteAddressBytes(destination.Slice(4, 4));
            return LinuxEpoll.SockaddrInLength;
        }

        destination[..LinuxEpoll.SockaddrIn6Length].Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(destination, LinuxEpoll.AfInet6);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], address.Port);
        if (address.IsIPv4)
        {
            destination[18] = 0xFF;
            destination[19] = 0xFF;
            address.WriteAddressBytes(destination.Slice(20, 4));
        }
        else
        {
            address.WriteAddressBytes(destination.Slice(8, 16));
        }

        return LinuxEpoll.SockaddrIn6Length;
    }
}
