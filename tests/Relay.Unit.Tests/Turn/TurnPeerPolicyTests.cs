using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

public sealed class TurnPeerPolicyTests
{
    // The server answers on these; 127.0.0.1 is here as it is on a loopback test server.
    private static readonly IPAddress[] ServerAddresses =
        [IPAddress.Parse("203.0.113.5"), IPAddress.Parse("2001:db8::5"), IPAddress.Loopback, IPAddress.Any];

    private static readonly Dictionary<char, TurnPeerPolicy> Policies = new()
    {
        ['D'] = Policy(new TurnOptions()),
        ['L'] = Policy(new TurnOptions { AllowLoopbackPeers = true }),
        ['A'] = Policy(new TurnOptions(), allowed: ["10.0.0.0/8", "fd00::/8", "169.254.169.254"]),
        ['X'] = Policy(
            new TurnOptions(),
            allowed: ["10.0.0.0/8", "fd00::/8"],
            denied: ["10.1.0.0/16", "8.8.8.0/24", "2001:db8:bad::/48", "fd00:bad::/32"]),
    };

    /// <summary>
    /// Address × configuration. Columns: D = defaults, L = AllowLoopbackPeers, A = AllowedPeers
    /// 10/8 + fd00::/8 + 169.254.169.254, X = AllowedPeers 10/8 + fd00::/8 with DeniedPeers 10.1/16,
    /// 8.8.8/24, 2001:db8:bad::/48, fd00:bad::/32. '+' allowed, '-' denied.
    /// </summary>
    public static TheoryData<string, int, string> Table => new()
    {
        // Public addresses, and an explicit deny over them.
        { "8.8.4.4", 53, "++++" },
        { "8.8.8.8", 53, "+++-" },
        { "198.51.100.7", 3478, "++++" },
        { "172.32.0.1", 9, "++++" },
        { "100.128.0.1", 9, "++++" },
        { "2606:4700::1111", 443, "++++" },
        { "2001:db8::1", 5000, "++++" },
        { "2001:db8:bad::1", 5000, "+++-" },

        // Loopback in every spelling that reaches it (CVE-2020-26262 and friends).
        { "127.0.0.1", 5000, "-+--" },
        { "127.255.255.254", 5000, "-+--" },
        { "::1", 5000, "-+--" },
        { "::ffff:127.0.0.1", 5000, "-+--" },        // IPv4-mapped
        { "::127.0.0.1", 5000, "-+--" },             // IPv4-compatible
        { "::ffff:0:127.0.0.1", 5000, "-+--" },      // IPv4-translated (SIIT)
        { "64:ff9b::127.0.0.1", 5000, "-+--" },      // NAT64 well-known prefix
        { "64:ff9b::7f00:1", 5000, "-+--" },
        { "2002:7f00:1::1", 5000, "-+--" },          // 6to4
        { "2001:0:4136:e378:8000:63bf:80ff:fffe", 5000, "-+--" }, // Teredo, client 127.0.0.1 inverted

        // Unspecified: Linux delivers 0.0.0.0 to loopback; loopback opt-in must not open it.
        { "0.0.0.0", 5000, "----" },
        { "0.1.2.3", 5000, "----" },
        { "::", 5000, "----" },
        { "::ffff:0.0.0.0", 5000, "----" },
        { "64:ff9b::", 5000, "----" },

        // RFC 1918, with allow and deny carving.
        { "10.0.0.1", 5000, "--++" },
        { "::ffff:10.0.0.1", 5000, "--++" },
        { "10.1.2.3", 5000, "--+-" },
        { "::ffff:10.1.2.3", 5000, "--+-" },
        { "64:ff9b::10.1.2.3", 5000, "--+-" },
        { "2002:a01:203::1", 5000, "--+-" },
        { "172.16.0.1", 5000, "----" },
        { "172.31.255.255", 5000, "----" },
        { "::ffff:172.20.0.1", 5000, "----" },
        { "192.168.1.1", 5000, "----" },
        { "::192.168.1.1", 5000, "----" },

        // Carrier-grade NAT, link-local (cloud metadata), multicast, reserved, broadcast.
        { "100.64.0.1", 5000, "----" },
        { "100.127.255.255", 5000, "----" },
        { "169.254.169.254", 80, "--+-" },
        { "::ffff:169.254.169.254", 80, "--+-" },
        { "169.254.1.1", 80, "----" },
        { "192.0.0.1", 80, "----" },               // IETF protocol assignments (review L7)
        { "::ffff:192.0.0.170", 80, "----" },
        { "168.63.129.16", 80, "----" },           // Azure wire server (review L7)
        { "64:ff9b::168.63.129.16", 80, "----" },
        { "168.63.129.17", 80, "++++" },
        { "192.0.1.1", 80, "++++" },
        { "198.18.0.12", 80, "++++" },             // benchmarking range: the NAT lab's public side
        { "224.0.0.1", 5000, "----" },
        { "239.255.255.250", 1900, "----" },
        { "::ffff:239.255.255.250", 1900, "----" },
        { "240.0.0.1", 5000, "----" },
        { "255.255.255.255", 5000, "----" },

        // IPv6 scopes.
        { "fe80::1", 5000, "----" },
        { "febf:ffff::1", 5000, "----" },
        { "fec0::1", 5000, "----" },
        { "fc00::1", 5000, "----" },
        { "fd00::1", 5000, "--++" },
        { "fd00:bad::1", 5000, "--+-" },
        { "ff02::1", 5000, "----" },
        { "ff0e::1", 5000, "----" },
        { "64:ff9b:1::a00:1", 5000, "----" }, // local-use NAT64: embedding unknown, so denied whole

        // Embedded public addresses are judged as the address they embed.
        { "::ffff:8.8.4.4", 53, "++++" },
        { "64:ff9b::8.8.4.4", 53, "++++" },
        { "64:ff9b::8.8.8.8", 53, "+++-" },
        { "2002:808:404::1", 53, "++++" },

        // The server's own addresses: service ports denied, relay ports (49152-65535) open for
        // relay-to-relay traffic between two clients of this server.
        { "203.0.113.5", 3478, "----" },
        { "203.0.113.5", 22, "----" },
        { "::ffff:203.0.113.5", 8080, "----" },
        { "64:ff9b::203.0.113.5", 1883, "----" },
        { "2001:db8::5", 3478, "----" },
        { "203.0.113.5", 49152, "++++" },
        { "203.0.113.5", 65535, "++++" },
        { "2001:db8::5", 50000, "++++" },
        { "127.0.0.1", 3478, "-+--" }, // a loopback test server with loopback opt-in reaches its own peers

        // Port 0 is never a peer.
        { "8.8.4.4", 0, "----" },
        { "2606:4700::1111", 0, "----" },
    };

    [Theory]
    [MemberData(nameof(Table))]
    public void Table_AddressTimesConfiguration(string address, int port, string expected)
    {
        var peer = Peer(address, port);
        var columns = "DLAX";
        for (var i = 0; i < columns.Length; i++)
        {
            Assert.True(
                Policies[columns[i]].IsAllowed(peer) == (expected[i] == '+'),
                $"{address} port {port} in configuration {columns[i]}: expected {(expected[i] == '+' ? "allowed" : "denied")}");
        }
    }

    [Fact]
    public void DefaultStunAddress_IsDenied()
    {
        Assert.False(Policies['D'].IsAllowed(default));
    }

    [Fact]
    public void ExplicitDeny_BeatsLoopbackOptIn()
    {
        var policy = Policy(new TurnOptions { AllowLoopbackPeers = true }, denied: ["127.0.0.2/32", "::1"]);
        Assert.True(policy.IsAllowed(Peer("127.0.0.1", 5000)));
        Assert.False(policy.IsAllowed(Peer("127.0.0.2", 5000)));
        Assert.False(policy.IsAllowed(Peer("::ffff:127.0.0.2", 5000)));
        Assert.False(policy.IsAllowed(Peer("::1", 5000)));
    }

    [Fact]
    public void ExplicitDeny_BeatsAnIdenticalAllow()
    {
        var policy = Policy(new TurnOptions(), allowed: ["10.0.0.0/8", "8.8.8.8"], denied: ["10.0.0.0/8", "8.8.8.8/32"]);
        Assert.False(policy.IsAllowed(Peer("10.0.0.1", 5000)));
        Assert.False(policy.IsAllowed(Peer("8.8.8.8", 53)));
    }

    [Fact]
    public void IPv6Ranges_DoNotMatchIPv4Peers()
    {
        // "All IPv6" must not silently mean "everything" because IPv4 is kept in a mapped form.
        var policy = Policy(new TurnOptions(), denied: ["::/0"]);
        Assert.True(policy.IsAllowed(Peer("8.8.4.4", 53)));
        Assert.False(policy.IsAllowed(Peer("2606:4700::1111", 53)));
        Assert.False(policy.IsAllowed(Peer("::ffff:8.8.4.4", 53))); // the IPv6 spelling is denied by the IPv6 rule
    }

    [Fact]
    public void MappedRanges_AreIPv4Ranges()
    {
        var policy = Policy(new TurnOptions(), denied: ["::ffff:8.8.8.0/120"]);
        Assert.False(policy.IsAllowed(Peer("8.8.8.8", 53)));
        Assert.False(policy.IsAllowed(Peer("::ffff:8.8.8.8", 53)));
        Assert.False(policy.IsAllowed(Peer("64:ff9b::8.8.8.8", 53)));
        Assert.True(policy.IsAllowed(Peer("8.8.4.4", 53)));
    }

    [Fact]
    public void IPv4Ranges_MatchEmbeddedIPv4()
    {
        var policy = Policy(new TurnOptions(), denied: ["0.0.0.0/0"]);
        Assert.False(policy.IsAllowed(Peer("::ffff:8.8.4.4", 53)));
        Assert.False(policy.IsAllowed(Peer("64:ff9b::8.8.4.4", 53)));
        Assert.True(policy.IsAllowed(Peer("2606:4700::1111", 53)));
    }

    [Fact]
    public void AllowedPeers_CanOpenTheServersOwnAddress_OnlyAtRelayPorts()
    {
        // A carve-out for the server's LAN must not expose the server's own services on it.
        var policy = new TurnPeerPolicy(WithLists(new TurnOptions(), ["10.0.0.0/8"], []), [IPAddress.Parse("10.0.0.5")]);
        Assert.True(policy.IsAllowed(Peer("10.0.0.6", 22)));
        Assert.False(policy.IsAllowed(Peer("10.0.0.5", 22)));
        Assert.True(policy.IsAllowed(Peer("10.0.0.5", 50000)));
    }

    [Fact]
    public void RelayPortRange_ComesFromOptions()
    {
        var options = new TurnOptions { RelayPortMin = 40000, RelayPortMax = 40010 };
        var policy = new TurnPeerPolicy(options, [IPAddress.Parse("203.0.113.5")]);
        Assert.False(policy.IsAllowed(Peer("203.0.113.5", 39999)));
        Assert.True(policy.IsAllowed(Peer("203.0.113.5", 40000)));
        Assert.True(policy.IsAllowed(Peer("203.0.113.5", 40010)));
        Assert.False(policy.IsAllowed(Peer("203.0.113.5", 40011)));
    }

    [Fact]
    public void MappedServerAddress_IsTreatedAsIPv4()
    {
        var policy = new TurnPeerPolicy(new TurnOptions(), [IPAddress.Parse("::ffff:198.51.100.9")]);
        Assert.False(policy.IsAllowed(Peer("198.51.100.9", 3478)));
        Assert.False(policy.IsAllowed(Peer("::ffff:198.51.100.9", 3478)));
        Assert.True(policy.IsAllowed(Peer("198.51.100.10", 3478)));
    }

    [Fact]
    public void Constructor_NamesTheBadKey()
    {
        var error = Assert.Throws<ArgumentException>(() => Policy(new TurnOptions(), denied: ["8.8.8.0/24", "nope"]));
        Assert.Contains("Relay:Turn:DeniedPeers:1: 'nope'", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("10.0.0.0/8", true, 8, "10.0.0.0/8")]
    [InlineData("1.2.3.4", true, 32, "1.2.3.4/32")]
    [InlineData(" 1.2.3.4/32 ", true, 32, "1.2.3.4/32")]
    [InlineData("0.0.0.0/0", true, 0, "0.0.0.0/0")]
    [InlineData("172.16.0.0/12", true, 12, "172.16.0.0/12")]
    [InlineData("fd00::/8", false, 8, "fd00::/8")]
    [InlineData("::1", false, 128, "::1/128")]
    [InlineData("::/0", false, 0, "::/0")]
    [InlineData("2001:db8::/32", false, 32, "2001:db8::/32")]
    [InlineData("2001:db8:0:1::/64", false, 64, "2001:db8:0:1::/64")]
    [InlineData("2001:db8:0:0:8000::/65", false, 65, "2001:db8:0:0:8000::/65")]
    [InlineData("::ffff:0:0/96", true, 0, "0.0.0.0/0")]
    [InlineData("::ffff:10.0.0.0/104", true, 8, "10.0.0.0/8")]
    [InlineData("::ffff:10.1.2.3", true, 32, "10.1.2.3/32")]
    [InlineData("::fffe:0:0/95", false, 95, "::fffe:0:0/95")]
    public void TryParseCidr_Accepts(string text, bool isIPv4, int prefix, string normalized)
    {
        Assert.True(TurnPeerPolicy.TryParseCidr(text, out var range));
        Assert.Equal(isIPv4, range.IsIPv4);
        Assert.Equal(prefix, range.PrefixLength);
        Assert.Equal(normalized, range.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    [InlineData("x")]
    [InlineData("10.0.0.1/8")]       // host bits set
    [InlineData("10/8")]             // inet_aton shorthand
    [InlineData("10.1/16")]
    [InlineData("10.0.0.0/33")]
    [InlineData("10.0.0.0/")]
    [InlineData("10.0.0.0/-1")]
    [InlineData("10.0.0.0/+8")]
    [InlineData("10.0.0.0/08x")]
    [InlineData("10.0.0.0/8/8")]
    [InlineData("fd00::/129")]
    [InlineData("fd00::1/8")]
    [InlineData("fe80::1%eth0")]
    [InlineData("fe80::%1/64")]
    [InlineData("256.0.0.0/8")]
    [InlineData("example.com")]
    public void TryParseCidr_Refuses(string text)
    {
        Assert.False(TurnPeerPolicy.TryParseCidr(text, out _));
    }

    [Fact]
    public void IsAllowed_DoesNotAllocate()
    {
        var policy = Policies['X'];
        StunAddress[] peers = [.. Table.Select(row => Peer((string)row[0], (int)row[1]))];
        var allowed = 0;
        foreach (var peer in peers)
        {
            allowed += policy.IsAllowed(peer) ? 1 : 0;
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            foreach (var peer in peers)
            {
                allowed += policy.IsAllowed(peer) ? 1 : 0;
            }
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.True(allowed > 0);
    }

    /// <summary>IPv6 stays IPv6 here (no mapping), exactly as a peer address arrives in XOR-PEER-ADDRESS.</summary>
    internal static StunAddress Peer(string address, int port)
    {
        var ip = IPAddress.Parse(address);
        var bytes = ip.GetAddressBytes();
        return ip.AddressFamily == AddressFamily.InterNetwork
            ? StunAddress.FromIPv4(bytes, (ushort)port)
            : StunAddress.FromIPv6(bytes, (ushort)port);
    }

    private static TurnPeerPolicy Policy(TurnOptions options, string[]? allowed = null, string[]? denied = null) =>
        new(WithLists(options, allowed ?? [], denied ?? []), ServerAddresses);

    private static TurnOptions WithLists(TurnOptions options, string[] allowed, string[] denied)
    {
        foreach (var range in allowed)
        {
            options.AllowedPeers.Add(range);
        }

        foreach (var range in denied)
        {
            options.DeniedPeers.Add(range);
        }

        return options;
    }
}
