using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// coturn's turnutils_uclient against our relay, with turnutils_peer as the echoing peer (Debian coturn).
/// uclient exits 0 even when every packet was lost, so each test reads its counters and demands that
/// everything sent came back.
/// </summary>
public sealed partial class TurnInteropTests
{
    private const string User = "alice";
    private const string Password = "wonderland";
    private const string RestSecret = "rest-api-secret";

    private static readonly string[] RelaySettings =
    [
        $"Relay:Turn:Users:0={User}:{Password}",
        $"Relay:Turn:SharedSecrets:0={RestSecret}",
        "Relay:Turn:AllowLoopbackPeers=true",
    ];

    public static TheoryData<string, string[]> Modes => new()
    {
        { "UDP, channels", [] },
        { "UDP, Send/Data indications (-s)", ["-s"] },
        { "TCP, channels (-t)", ["-t"] },
        { "TCP, Send/Data indications (-t -s)", ["-t", "-s"] },
        { "UDP, IPv4 requested explicitly, DONT-FRAGMENT (-X -g)", ["-X", "-g"] },
        { "UDP, RTP/RTCP pairs (EVEN-PORT)", ["-EVEN"] },
        { "UDP, dual IPv4+IPv6 allocation (-Z, ADDITIONAL-ADDRESS-FAMILY)", ["-Z"] },
        { "TCP, dual IPv4+IPv6 allocation (-t -Z)", ["-t", "-Z"] },
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task Uclient_RelaysThroughUs_ToAnEchoPeer_WithNoLoss(string mode, string[] flags)
    {
        await using var server = await RelayTestServer.StartAsync(RelaySettings);
        var peerPort = FreeUdpPort();
        using var peer = ExternalTool.Start("turnutils_peer", "-L", "127.0.0.1", "-p", Port(peerPort));
        await WaitForUdpListenerAsync(peerPort);

        // -c (no RTCP twin) unless the mode is about the pair; 2 clients, 20 messages each.
        var rtcp = flags.Contains("-EVEN");
        string[] arguments =
        [
            .. flags.Where(static f => f != "-EVEN"), .. rtcp ? Array.Empty<string>() : ["-c"],
            "-m", "2", "-n", "20", "-u", User, "-w", Password, "-e", "127.0.0.1", "-r", Port(peerPort),
            "-p", Port(server.StunPort), "127.0.0.1",
        ];
        var result = await ExternalTool.RunAsync("turnutils_uclient", arguments);

        // uclient counts the messages of each client's RTP session; its RTCP twin only has to allocate.
        AssertNoLoss(result.Output, expected: 2 * 20, mode);
        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        Assert.True(metrics.RelayedPackets(toPeer: true) >= 2 * 20, $"{mode}: relay counted {metrics.RelayedPackets(toPeer: true)} packets to the peer");
        Assert.True(metrics.RelayedPackets(toPeer: false) >= 2 * 20, $"{mode}: relay counted {metrics.RelayedPackets(toPeer: false)} packets from the peer");

        // With RTCP, uclient's RTCP allocation takes the odd port its RTP allocation reserved (EVEN-PORT
        // with R=1, then RESERVATION-TOKEN), and must get it rather than a 508.
        Assert.Equal(0, metrics.Responses(508));
        if (rtcp)
        {
            Assert.True(metrics.ReservationsRedeemed >= 1, $"{mode}: no RESERVATION-TOKEN was redeemed");
        }

        // -Z: every allocation also got an IPv6 relayed address (coturn sends the draft's 0x8032 code point).
        Assert.Equal(flags.Contains("-Z") ? metrics.AllocationsCreated : 0, metrics.DualAllocationsCreated);
    }

    [Fact]
    public async Task Uclient_OverTls_WithATestCertificate_RelaysWithNoLoss()
    {
        var directory = Directory.CreateTempSubdirectory("relay-turn-tls-").FullName;
        try
        {
            var (certificate, key) = StunTcpTlsTests.WriteSelfSignedPem(directory);
            await using var server = await RelayTestServer.StartAsync([.. RelaySettings, $"Relay:Tls:CertificatePath={certificate}", $"Relay:Tls:KeyPath={key}"]);
            var peerPort = FreeUdpPort();
            using var peer = ExternalTool.Start("turnutils_peer", "-L", "127.0.0.1", "-p", Port(peerPort));
            await WaitForUdpListenerAsync(peerPort);

            // -t -S: TLS over TCP to the TLS port (RFC 8656 §3.1; -S alone means DTLS, which we do not serve).
            // uclient does not verify the certificate without -E.
            var result = await ExternalTool.RunAsync("turnutils_uclient", "-t", "-S", "-c", "-m", "2", "-n", "20", "-u", User, "-w", Password,
                "-e", "127.0.0.1", "-r", Port(peerPort), "-p", Port(server.TlsPort), "127.0.0.1");
            AssertNoLoss(result.Output, expected: 2 * 20, "TLS");
            Assert.True(server.Services.GetRequiredService<TurnMetrics>().AllocationsCreated >= 2);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Theory]
    [InlineData("UDP")]
    [InlineData("TCP")]
    public async Task Uclient_IPv6Relay_ToAnIPv6Peer_WithNoLoss(string transport)
    {
        await using var server = await RelayTestServer.StartAsync(RelaySettings);
        var peerPort = FreeUdpPort();
        using var peer = ExternalTool.Start("turnutils_peer", "-L", "::1", "-p", Port(peerPort));
        await WaitForUdpListenerAsync(peerPort, IPAddress.IPv6Loopback);

        // -x: REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §7.2), with the client itself on IPv4.
        string[] tcp = transport == "TCP" ? ["-t"] : [];
        var result = await ExternalTool.RunAsync("turnutils_uclient", [.. tcp, "-x", "-c", "-m", "2", "-n", "20", "-u", User, "-w", Password,
            "-e", "::1", "-r", Port(peerPort), "-p", Port(server.StunPort), "127.0.0.1"]);
        AssertNoLoss(result.Output, expected: 2 * 20, $"IPv6 relay over {transport}");
    }

    [Theory]
    [InlineData("TCP")]
    [InlineData("TLS")]
    public async Task Uclient_TcpRelay_Rfc6062_ClientToClient_WithNoLoss(string transport)
    {
        var directory = Directory.CreateTempSubdirectory("relay-turn-6062-").FullName;
        try
        {
            var (certificate, key) = StunTcpTlsTests.WriteSelfSignedPem(directory);
            await using var server = await RelayTestServer.StartAsync([.. RelaySettings, $"Relay:Tls:CertificatePath={certificate}", $"Relay:Tls:KeyPath={key}"]);

            // -T: TCP relay (RFC 6062). One client Connects to the other's relayed address, the other gets a
            // ConnectionAttempt; both open data connections with ConnectionBind.
            string[] tls = transport == "TLS" ? ["-S"] : [];
            var port = transport == "TLS" ? server.TlsPort : server.StunPort;
            var result = await ExternalTool.RunAsync("turnutils_uclient", [.. tls, "-T", "-m", "2", "-n", "20", "-u", User, "-w", Password, "-p", Port(port), "127.0.0.1"]);
            AssertNoLoss(result.Output, expected: 2 * 20, $"TCP relay over {transport}");
            var metrics = server.Services.GetRequiredService<TurnMetrics>();
            Assert.True(metrics.RelayedPackets(toPeer: true) > 0, "no bytes crossed the TCP relay");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Uclient_TcpRelay_Rfc6062_UnderTheBandwidthCap_IsPacedNotLossy()
    {
        // Each 2,000-byte message is larger than the allocation's whole budget of 1,500 B/s, so relaying any one
        // of them must pause the copy (whatever pace uclient sends at); TCP flow control does the rest, and
        // every byte still arrives.
        await using var server = await RelayTestServer.StartAsync([.. RelaySettings, "Relay:Turn:MaxBytesPerSecondPerAllocation=1500"]);
        var result = await ExternalTool.RunAsync("turnutils_uclient", "-T", "-m", "2", "-n", "2", "-l", "2000", "-u", User, "-w", Password, "-p", Port(server.StunPort), "127.0.0.1");
        AssertNoLoss(result.Output, expected: 2 * 2, "TCP relay under the bandwidth cap");
        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        Assert.True(metrics.LimitHits(TurnLimit.TcpBandwidth) > 0, "the cap never paced the TCP relay");
    }

    [Fact]
    public async Task Uclient_ClientToClient_ThroughTwoAllocations_WithNoLoss()
    {
        await using var server = await RelayTestServer.StartAsync(RelaySettings);

        // -y: each client's peer is another client's relayed address, so both directions cross the relay twice.
        var result = await ExternalTool.RunAsync("turnutils_uclient", "-y", "-c", "-m", "2", "-n", "20", "-u", User, "-w", Password, "-p", Port(server.StunPort), "127.0.0.1");
        AssertNoLoss(result.Output, expected: 2 * 20, "client-to-client");
    }

    [Fact]
    public async Task Uclient_WithTimeLimitedRestCredentials_FromTheSharedSecret_WithNoLoss()
    {
        await using var server = await RelayTestServer.StartAsync(RelaySettings);
        var peerPort = FreeUdpPort();
        using var peer = ExternalTool.Start("turnutils_peer", "-L", "127.0.0.1", "-p", Port(peerPort));
        await WaitForUdpListenerAsync(peerPort);

        // -W makes uclient derive username "<expiry>:<user>" and password base64(HMAC-SHA1(secret, username)).
        var result = await ExternalTool.RunAsync("turnutils_uclient", "-c", "-m", "1", "-n", "20", "-u", "bob", "-W", RestSecret,
            "-e", "127.0.0.1", "-r", Port(peerPort), "-p", Port(server.StunPort), "127.0.0.1");
        AssertNoLoss(result.Output, expected: 20, "REST credentials");
    }

    [Fact]
    public async Task WrongPassword_IsRefusedWith401_AndAllocatesNothing()
    {
        await using var server = await RelayTestServer.StartAsync(RelaySettings);
        var peerPort = FreeUdpPort();
        var result = await ExternalTool.RunAsync("turnutils_uclient", "-c", "-m", "1", "-n", "5", "-u", User, "-w", "not-the-password",
            "-e", "127.0.0.1", "-r", Port(peerPort), "-p", Port(server.StunPort), "127.0.0.1");

        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        Assert.True(metrics.Responses(401) >= 2, $"expected the challenge and the refusal of the wrong key, saw {metrics.Responses(401)} 401s:\n{result.Output}");
        Assert.Equal(0, metrics.Responses(200));
        Assert.Equal(0, server.Services.GetRequiredService<TurnRelay>().AllocationCount);
        var totals = TotalsPattern().Matches(result.Output).LastOrDefault();
        Assert.True(totals is null || totals.Groups["recv"].Value == "0", "data crossed the relay without valid credentials:\n" + result.Output);
    }

    [Fact]
    public async Task LoopbackPeer_IsRefusedWith403_UnlessExplicitlyAllowed()
    {
        await using var server = await RelayTestServer.StartAsync($"Relay:Turn:Users:0={User}:{Password}");
        var peerPort = FreeUdpPort();
        using var peer = ExternalTool.Start("turnutils_peer", "-L", "127.0.0.1", "-p", Port(peerPort));
        await WaitForUdpListenerAsync(peerPort);

        var result = await ExternalTool.RunAsync("turnutils_uclient", "-c", "-m", "1", "-n", "5", "-u", User, "-w", Password,
            "-e", "127.0.0.1", "-r", Port(peerPort), "-p", Port(server.StunPort), "127.0.0.1");

        // coturn CVE-2020-26262: a loopback peer must not be reachable through the relay by default.
        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        Assert.True(metrics.Responses(403) >= 1, "no 403 for the loopback peer:\n" + result.Output);
        Assert.Equal(0, metrics.RelayedPackets(toPeer: true));
        Assert.Equal(0, metrics.RelayedPackets(toPeer: false));
    }

    [Fact]
    public async Task PerUserQuota_Exhausted_Gets486_AndIsCounted()
    {
        await using var server = await RelayTestServer.StartAsync([.. RelaySettings, "Relay:Turn:MaxAllocationsPerUser=1"]);
        var peerPort = FreeUdpPort();
        using var peer = ExternalTool.Start("turnutils_peer", "-L", "127.0.0.1", "-p", Port(peerPort));
        await WaitForUdpListenerAsync(peerPort);

        var result = await ExternalTool.RunAsync("turnutils_uclient", "-c", "-m", "3", "-n", "5", "-u", User, "-w", Password,
            "-e", "127.0.0.1", "-r", Port(peerPort), "-p", Port(server.StunPort), "127.0.0.1");

        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        Assert.True(metrics.Responses(486) >= 1, "no 486 with 3 clients and a quota of 1:\n" + result.Output);
        Assert.True(metrics.LimitHits(TurnLimit.AllocationsPerUser) >= 1);
    }

    private static void AssertNoLoss(string output, int expected, string mode)
    {
        var totals = TotalsPattern().Matches(output).LastOrDefault();
        Assert.True(totals is not null, $"{mode}: uclient printed no totals:\n{output}");
        var sent = int.Parse(totals.Groups["sent"].Value, CultureInfo.InvariantCulture);
        var received = int.Parse(totals.Groups["recv"].Value, CultureInfo.InvariantCulture);
        Assert.True(sent == expected && received == expected, $"{mode}: sent {sent}, received {received}, expected {expected} each:\n{output}");
        Assert.Matches(@"Total lost packets 0 \(", output);
    }

    [GeneratedRegex(@"tot_send_msgs=(?<sent>\d+), tot_recv_msgs=(?<recv>\d+)\s*$", RegexOptions.Multiline)]
    private static partial Regex TotalsPattern();

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static int FreeUdpPort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    /// <summary>turnutils_peer echoes; wait until it does, so the first relayed packet is not lost to a race.</summary>
    private static async Task WaitForUdpListenerAsync(int port, IPAddress? address = null)
    {
        address ??= IPAddress.Loopback;
        using var probe = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        probe.Bind(new IPEndPoint(address, 0));
        var target = new IPEndPoint(address, port);
        var buffer = new byte[64];
        for (var attempt = 0; attempt < 100; attempt++)
        {
            await probe.SendToAsync("ping"u8.ToArray(), target);
            using var wait = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            try
            {
                await probe.ReceiveFromAsync(buffer, new IPEndPoint(address.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, 0), wait.Token);
                return;
            }
            catch (OperationCanceledException)
            {
            }
            catch (SocketException)
            {
                // ICMP port unreachable while the peer starts.
            }
        }

        Assert.Fail($"turnutils_peer never echoed on {target}");
    }
}
