using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>
/// Which peers an allocation may reach (CreatePermission, ChannelBind, Send). RFC 8656 §21 warns that
/// a relay is an open proxy into whatever network the server sits in; coturn's CVE-2020-26262 showed
/// how a naive check falls: 0.0.0.0 and ::ffff:127.0.0.1 both reached the server's own loopback
/// services. So every address is first reduced to the IPv4 address it really reaches, and only then
/// judged.
/// </summary>
/// <remarks>
/// Order of judgement, first match wins:
/// <list type="number">
/// <item>port 0 or no address: denied;</item>
/// <item><see cref="TurnOptions.DeniedPeers"/>: denied (an explicit deny beats every allow);</item>
/// <item>a server address at a port outside the relay range: denied unless it is loopback and
///   <see cref="TurnOptions.AllowLoopbackPeers"/> is on. Ports inside the relay range stay reachable
///   because two clients that both relay through this server (WebRTC with a relay-only policy) talk
///   relay address to relay address;</item>
/// <item>loopback with <see cref="TurnOptions.AllowLoopbackPeers"/>: allowed;</item>
/// <item><see cref="TurnOptions.AllowedPeers"/>: allowed;</item>
/// <item>the default deny list: denied;</item>
/// <item>everything else: allowed.</item>
/// </list>
/// IPv4 ranges match IPv4 peers and IPv4 embedded in IPv6; IPv6 ranges match the IPv6 address as sent.
/// </remarks>
internal sealed class TurnPeerPolicy
{
    // Host-order IPv4 ranges denied by default (RFC 8656 §21.1 leaves the list to the operator; these
    // are the ones a public relay must never reach). 240/4 includes 255.255.255.255. 198.18/15 (RFC 2544
    // benchmarking) is left reachable on purpose: labs, the NAT lab tests among them, use it as "the
    // Internet"; an operator whose network uses it adds it to DeniedPeers.
    private static readonly TurnPeerRange[] DefaultDeniedIPv4 =
    [
        TurnPeerRange.IPv4(0x00000000, 8),  // 0/8 "this network"; Linux sends 0.0.0.0 to loopback (CVE-2020-26262)
        TurnPeerRange.IPv4(0x0A000000, 8),  // 10/8, RFC 1918
        TurnPeerRange.IPv4(0x64400000, 10), // 100.64/10, RFC 6598 carrier-grade NAT
        TurnPeerRange.IPv4(0x7F000000, 8),  // 127/8 loopback
        TurnPeerRange.IPv4(0xA9FE0000, 16), // 169.254/16 link-local, cloud metadata services live here
        TurnPeerRange.IPv4(0xA83F8110, 32), // 168.63.129.16, Azure's wire server (DHCP, DNS, health probes, VM agent)
        TurnPeerRange.IPv4(0xAC100000, 12), // 172.16/12, RFC 1918
        TurnPeerRange.IPv4(0xC0000000, 24), // 192.0.0/24, IETF protocol assignments (RFC 6890: not forwardable; DS-Lite, NAT64 discovery)
        TurnPeerRange.IPv4(0xC0A80000, 16), // 192.168/16, RFC 1918
        TurnPeerRange.IPv4(0xE0000000, 4),  // 224/4 multicast
        TurnPeerRange.IPv4(0xF0000000, 4),  // 240/4 reserved, and the limited broadcast address
    ];

    private static readonly TurnPeerRange[] DefaultDeniedIPv6 =
    [
        TurnPeerRange.IPv6(0, 0, 128),                     // :: unspecified
        TurnPeerRange.IPv6(0, 1, 128),                     // ::1 loopback
        TurnPeerRange.IPv6(0xFE80_0000_0000_0000, 0, 10),  // fe80::/10 link-local
        TurnPeerRange.IPv6(0xFEC0_0000_0000_0000, 0, 10),  // fec0::/10 site-local (RFC 3879 deprecated it; some LANs still use it)
        TurnPeerRange.IPv6(0xFC00_0000_0000_0000, 0, 7),   // fc00::/7 unique local (RFC 4193)
        TurnPeerRange.IPv6(0xFF00_0000_0000_0000, 0, 8),   // ff00::/8 multicast
        // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): the operator picks where in it the IPv4 address
        // sits, so it cannot be extracted, only denied. AllowedPeers can open it.
        TurnPeerRange.IPv6(0x0064_FF9B_0001_0000, 0, 48),
    ];

    private readonly TurnPeerRange[] _allowedIPv4;
    private readonly TurnPeerRange[] _allowedIPv6;
    private readonly TurnPeerRange[] _deniedIPv4;
    private readonly TurnPeerRange[] _deniedIPv6;
    private readonly TurnPeerRange[] _serverIPv4;
    private readonly TurnPeerRange[] _serverIPv6;
    private readonly bool _allowLoopback;
    private readonly int _relayPortMin;
    private readonly int _relayPortMax;

    /// <summary>Builds the policy.</summary>
    /// <param name="options">The TURN options; CIDR lists must already have passed <see cref="TurnOptionsValidator"/>.</param>
    /// <param name="serverAddresses">
    /// Every address this host answers on: listen and relay addresses, <see cref="TurnOptions.ExternalAddress"/>,
    /// and when a listener is bound to a wildcard, every interface address. Wildcards themselves are ignored
    /// (0.0.0.0 and :: are denied anyway).
    /// </param>
    public TurnPeerPolicy(TurnOptions options, IEnumerable<IPAddress> serverAddresses)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(serverAddresses);

        var allowed = ParseAll(options.AllowedPeers, nameof(TurnOptions.AllowedPeers));
        var denied = ParseAll(options.DeniedPeers, nameof(TurnOptions.DeniedPeers));
        var server = serverAddresses
            .Where(address => !address.Equals(IPAddress.Any) && !address.Equals(IPAddress.IPv6Any))
            .Select(TurnPeerRange.Host)
            .Distinct()
            .ToList();

        _allowedIPv4 = [.. allowed.Where(range => range.IsIPv4)];
        _allowedIPv6 = [.. allowed.Where(range => !range.IsIPv4)];
        _deniedIPv4 = [.. denied.Where(range => range.IsIPv4)];
        _deniedIPv6 = [.. denied.Where(range => !range.IsIPv4)];
        _serverIPv4 = [.. server.Where(range => range.IsIPv4)];
        _serverIPv6 = [.. server.Where(range => !range.IsIPv4)];
        _allowLoopback = options.AllowLoopbackPeers;
        _relayPortMin = options.RelayPortMin;
        _relayPortMax = options.RelayPortMax;
    }

    /// <summary>
    /// Parses a peer range for configuration: "10.0.0.0/8", "fd00::/8", "1.2.3.4" (= /32), "::1" (= /128).
    /// Host bits beyond the prefix, IPv4 shorthands ("10/8") and zone ids are refused.
    /// </summary>
    public static bool TryParseCidr(string text, out TurnPeerRange range) => TurnPeerRange.TryParse(text, out range);

    /// <summary>True when an allocation may send to (and receive from) <paramref name="peer"/>.</summary>
    /// <remarks>Per CreatePermission, ChannelBind and Send: no allocation, a handful of mask compares.</remarks>
    public bool IsAllowed(in StunAddress peer)
    {
        if (peer.Port == 0)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[16];
        ulong high = 0, low = 0;
        uint ipv4 = 0;
        bool isIPv6, hasIPv4;
        if (peer.Family == AddressFamily.InterNetwork)
        {
            peer.WriteAddressBytes(bytes);
            ipv4 = BinaryPrimitives.ReadUInt32BigEndian(bytes);
            isIPv6 = false;
            hasIPv4 = true;
        }
        else if (peer.Family == AddressFamily.InterNetworkV6)
        {
            peer.WriteAddressBytes(bytes);
            high = BinaryPrimitives.ReadUInt64BigEndian(bytes);
            low = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
            isIPv6 = true;
            hasIPv4 = TryGetEmbeddedIPv4(high, low, out ipv4);
        }
        else
        {
            return false;
        }

        if ((hasIPv4 && Matches(_deniedIPv4, ipv4)) || (isIPv6 && Matches(_deniedIPv6, high, low)))
        {
            return false;
        }

        var loopback = hasIPv4 ? ipv4 >> 24 == 127 : high == 0 && low == 1;
        var loopbackOptIn = loopback && _allowLoopback;
        if (!loopbackOptIn
            && (peer.Port < _relayPortMin || peer.Port > _relayPortMax)
            && ((hasIPv4 && Matches(_serverIPv4, ipv4)) || (isIPv6 && Matches(_serverIPv6, high, low))))
        {
            return false;
        }

        if (loopbackOptIn
            || (hasIPv4 && Matches(_allowedIPv4, ipv4))
            || (isIPv6 && Matches(_allowedIPv6, high, low)))
        {
            return true;
        }

        return !((hasIPv4 && Matches(DefaultDeniedIPv4, ipv4)) || (isIPv6 && Matches(DefaultDeniedIPv6, high, low)));
    }

    /// <summary>
    /// The IPv4 address an IPv6 address really reaches, for every form a kernel, a NAT64 or a tunnel
    /// would deliver to IPv4. Missing one of these is exactly the CVE-2020-26262 class of bypass.
    /// </summary>
    internal static bool TryGetEmbeddedIPv4(ulong high, ulong low, out uint ipv4)
    {
        ipv4 = (uint)low;
        if (high == 0)
        {
            return (low >> 32) switch
            {
                // ::ffff:a.b.c.d, IPv4-mapped (RFC 4291 §2.5.5.2): a dual-stack socket sends it as IPv4.
                0xFFFF => true,
                // ::a.b.c.d, IPv4-compatible (RFC 4291 §2.5.5.1, deprecated but still parsed everywhere).
                // :: and ::1 are not: they are the IPv6 unspecified and loopback addresses.
                0 => low > 1,
                // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765 §2.1, SIIT).
                0xFFFF_0000 => true,
                _ => false,
            };
        }

        // 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052 §2.1): the translator forwards to IPv4.
        if (high == 0x0064_FF9B_0000_0000 && low >> 32 == 0)
        {
            return true;
        }

        // 2002::/16, 6to4 (RFC 3056 §2): the IPv4 address is bits 16-47.
        if (high >> 48 == 0x2002)
        {
            ipv4 = (uint)(high >> 16);
            return true;
        }

        // 2001:0::/32, Teredo (RFC 4380 §4): the client's IPv4 address, inverted, is the last 32 bits.
        if (high >> 32 == 0x2001_0000)
        {
            ipv4 = ~(uint)low;
            return true;
        }

        return false;
    }

    private static bool Matches(TurnPeerRange[] ranges, uint ipv4)
    {
        foreach (ref readonly var range in ranges.AsSpan())
        {
            if (range.Contains(ipv4))
            {
                return true;
            }
        }

        return false;
    }

    private static bool Matches(TurnPeerRange[] ranges, ulong high, ulong low)
    {
        foreach (ref readonly var range in ranges.AsSpan())
        {
            if (range.Contains(high, low))
            {
                return true;
            }
        }

        return false;
    }

    private static List<TurnPeerRange> ParseAll(IList<string> texts, string key)
    {
        var ranges = new List<TurnPeerRange>(texts.Count);
        for (var i = 0; i < texts.Count; i++)
        {
            if (!TryParseCidr(texts[i], out var range))
            {
                throw new ArgumentException(string.Format(
                    CultureInfo.InvariantCulture, "{0}:{1}:{2}: '{3}' is not a CIDR range", TurnOptions.SectionName, key, i, texts[i]));
            }

            ranges.Add(range);
        }

        return ranges;
    }
}
