using System.Net;
using System.Net.Sockets;

namespace Relay.Protocol.Rendezvous;

/// <summary>
/// Which candidate addresses a peer may be made to probe (review M10): one rule for the server, which drops
/// such candidates before it relays them (src/Rendezvous/Introductions/CandidateFilter.cs), and for the
/// device, which drops them again on arrival (DeviceClient's PeerSession), since a device must not trust
/// the server or the peer to have done so.
/// </summary>
internal static class CandidateAddress
{
    /// <summary>True for loopback, in either family (and IPv4-mapped).</summary>
    public static bool IsLoopback(IPAddress address) => IPAddress.IsLoopback(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address);

    /// <summary>
    /// False for loopback, unspecified, "this network" (0/8), multicast, broadcast and link-local addresses, in
    /// either family: a connectivity check or birthday probe sent there would reach this host's own services,
    /// a multicast group or a link-local service (169.254.169.254 metadata endpoints) rather than a peer.
    /// Private and CGNAT ranges stay: devices on one LAN reach each other that way.
    /// </summary>
    public static bool IsProbeable(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any))
        {
            return false;
        }

        if (address.AddressFamily == AddressFamily.InterNetworkV6)
        {
            return !address.IsIPv6Multicast && !address.IsIPv6LinkLocal && !address.IsIPv6SiteLocal;
        }

        Span<byte> b = stackalloc byte[4];
        address.TryWriteBytes(b, out _);
        return b[0] != 0                          // 0.0.0.0/8: "this network" (RFC 1122 §3.2.1.3)
            && b[0] < 224                         // 224/4 multicast and 240/4 reserved, 255.255.255.255 broadcast
            && !(b[0] == 169 && b[1] == 254);     // 169.254/16 link-local (RFC 3927)
    }
}
