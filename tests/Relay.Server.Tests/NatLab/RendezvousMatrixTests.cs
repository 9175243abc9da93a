using System.Diagnostics;
using System.Globalization;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// Issue 7 §3, the rendezvous matrix: two PeerDemo devices behind every pair of NAT types (15 unordered
/// pairs, same-type ones included) connect through our server in the lab, and the path is the one the
/// pair allows: direct unless both sides are symmetric or either side blocks UDP; with birthday probing
/// on (the default), easy × symmetric too. Direct is proven from the packets, not from PeerDemo's PATH
/// line: after both sides report it, every message and acknowledgement arrives at each client from the
/// other NAT's WAN address (the client namespace's counters), and the relay ports of the server (one per
/// allocation) count nothing more. Relayed is proven the same way: the messages cross the relay ports,
/// and no datagram from the other NAT ever reaches either client. Host candidates are off (--no-host):
/// in the lab every client is on its own LAN, so only the NATed paths are real.
/// </summary>
/// <remarks>
/// Set <c>RELAY_RENDEZVOUS_TIMINGS</c> to a file to get one CSV line per run (pair, path, time to the first
/// message, time to direct; scripts/bench-rendezvous.sh); timings are recorded, never asserted.
/// </remarks>
[Collection(NatLabCollection.Name)]
public sealed class RendezvousMatrixTests
{
    private const int Messages = 5;

    public static TheoryData<NatType, NatType> Pairs()
    {
        var data = new TheoryData<NatType, NatType>();
        var types = Enum.GetValues<NatType>();
        for (var i = 0; i < types.Length; i++)
        {
            for (var j = i; j < types.Length; j++)
            {
                data.Add(types[i], types[j]);
            }
        }

        return data;
    }

    /// <summary>The rule the matrix asserts (and docs/rendezvous.md "NAT lab results" tabulates).</summary>
    public static bool ExpectDirect(NatType a, NatType b) =>
        a != NatType.UdpBlocked && b != NatType.UdpBlocked && !(a == NatType.Symmetric && b == NatType.Symmetric);

    [NatLabTheory]
    [MemberData(nameof(Pairs))]
    public async Task Every_pair_of_nat_types_connects_on_the_path_the_pair_allows(NatType a, NatType b)
    {
        var outcome = await RunPairAsync(a, b, birthday: true, ExpectDirect(a, b));
        Assert.Equal(ExpectDirect(a, b) ? "direct" : "relayed", outcome);
    }

    /// <summary>
    /// The control for easy × symmetric: without birthday probing the port-restricted easy side never lets
    /// a check from the symmetric side's fresh ports in, so the pair stays relayed. It shows that probing is
    /// what makes that pair direct, and that the matrix's direct verdicts can fail.
    /// </summary>
    [NatLabFact]
    public async Task Easy_and_symmetric_stay_relayed_without_birthday_probing()
    {
        var outcome = await RunPairAsync(NatType.Easy, NatType.Symmetric, birthday: false, expectDirect: false);
        Assert.Equal("relayed", outcome);
    }

    private static async Task<string> RunPairAsync(NatType a, NatType b, bool birthday, bool expectDirect)
    {
        await using var lab = await NatLab.CreateAsync(a, b);
        NatSite siteA = lab.Sites[0], siteB = lab.Sites[1];
        await using var server = await LabRelayServer.StartAsync(lab, 2);
        var evidence = await PacketEvidence.InstallAsync(lab);
        string[] common = birthday ? ["--no-host"] : ["--no-host", "--no-birthday"];

        // B first: an offer reaches only a device that is connected and subscribed.
        var peerB = LabPeer.Start(lab, siteB, common);
        await peerB.WaitForLineAsync(l => l.StartsWith("CONNECTED", StringComparison.Ordinal), "connecting to the server", TimeSpan.FromSeconds(60));
        var peerA = LabPeer.Start(lab, siteA, [.. common, "--connect", LabRelayServer.DeviceId(siteB.Index)]);
        peerA.Other = peerB;
        peerB.Other = peerA;
        peerA.Describe = peerB.Describe = async () => $"{await server.DescribeRendezvousAsync()}{await evidence.DescribeAsync()}{await lab.DescribeAsync()}";
        var connected = await peerA.WaitForLineAsync(l => l.StartsWith("CONNECTED", StringComparison.Ordinal), "connecting to the server", TimeSpan.FromSeconds(60));

        async Task<string> Context() =>
            $"{a} × {b}\n{peerA.Transcript}\n{await server.DescribeRendezvousAsync()}{await evidence.DescribeAsync()}{await lab.DescribeAsync()}";

        // Relay first: the first message goes as soon as A's channel is usable, whatever the path.
        await peerA.WaitForLineAsync(l => l.StartsWith("READY", StringComparison.Ordinal), "the channel (relay first)", TimeSpan.FromSeconds(60));
        await peerA.SendAsync("first");
        var first = await peerB.WaitForReceivedAsync("first", TimeSpan.FromSeconds(30));
        await peerB.WaitForLineAsync(l => l.StartsWith("READY", StringComparison.Ordinal), "the incoming channel");

        string outcome;
        double? toDirect = null;
        if (expectDirect)
        {
            // CheckTimeout (10 s) and the birthday window (10 s) bound the punch; the rest is slack for a loaded host.
            var (directA, addressA, _) = await peerA.WaitForDirectAsync("the direct path", TimeSpan.FromSeconds(45));
            var (_, addressB, _) = await peerB.WaitForDirectAsync("the direct path", TimeSpan.FromSeconds(45));
            toDirect = Stopwatch.GetElapsedTime(connected.At, directA.At).TotalMilliseconds;
            Assert.True(addressA == siteB.WanAddress && addressB == siteA.WanAddress, "each side's direct path must name the other NAT's WAN address\n" + await Context());

            var relayBefore = await evidence.RelayAsync();
            long atA = await evidence.FromPeerAsync(siteA, siteB), atB = await evidence.FromPeerAsync(siteB, siteA);
            await ExchangeAsync(peerA, peerB);
            var relayAfter = await evidence.RelayAsync();
            long atA2 = await evidence.FromPeerAsync(siteA, siteB), atB2 = await evidence.FromPeerAsync(siteB, siteA);

            // Each side got at least the other's messages and the acknowledgements of its own, from the other NAT.
            Assert.True(atA2 - atA >= 2 * Messages && atB2 - atB >= 2 * Messages,
                $"datagrams from the other NAT during the exchange: at A {atA2 - atA}, at B {atB2 - atB} (want >= {2 * Messages} each)\n{await Context()}");
            Assert.True(relayBefore.TotalIn == relayAfter.TotalIn && relayBefore.TotalOut == relayAfter.TotalOut,
                $"the relay moved after the path went direct: before {relayBefore}, after {relayAfter}\n{await Context()}");
            foreach (var peer in new[] { peerA, peerB })
            {
                Assert.True(!peer.Paths.SkipWhile(p => p.Path != "direct").Any(p => p.Path == "relayed"), $"{peer.Name} fell back to the relay after going direct\n{await Context()}");
            }
            outcome = "direct";
        }
        else
        {
            // The checks end at CheckTimeout; the first side to give up reports "relayed", which the server
            // counts. Waiting for that count (not for a time) is what makes "never went direct" meaningful.
            await WaitForMetricAsync(server, "relay_rendezvous_results_total", "path=\"relayed\"", await Context());
            var relayBefore = await evidence.RelayAsync();
            await ExchangeAsync(peerA, peerB);
            var relayAfter = await evidence.RelayAsync();
            Assert.True(relayAfter.TotalOut - relayBefore.TotalOut >= 2 * Messages,
                $"the messages did not cross the relay ports: before {relayBefore}, after {relayAfter}\n{await Context()}");
            Assert.True(await evidence.FromPeerAsync(siteA, siteB) == 0 && await evidence.FromPeerAsync(siteB, siteA) == 0,
                "a datagram from the other NAT reached a client: that is a direct path, not a relayed one\n" + await Context());
            Assert.DoesNotContain(peerA.Paths.Concat(peerB.Paths), p => p.Path == "direct");
            outcome = "relayed";
        }

        Record(a, b, birthday, outcome, Stopwatch.GetElapsedTime(connected.At, first.At).TotalMilliseconds, toDirect);
        return outcome;
    }

    /// <summary>Messages both ways, each waited for at the other side (QoS 1: SENT means the peer acknowledged it).</summary>
    private static async Task ExchangeAsync(LabPeer a, LabPeer b)
    {
        for (var i = 0; i < Messages; i++)
        {
            var ab = $"a-to-b-{i.ToString(CultureInfo.InvariantCulture)}";
            var ba = $"b-to-a-{i.ToString(CultureInfo.InvariantCulture)}";
            await a.SendAsync(ab);
            await b.SendAsync(ba);
            await b.WaitForReceivedAsync(ab);
            await a.WaitForReceivedAsync(ba);
            await a.WaitForLineAsync(l => l == "SENT " + ab, $"the peer's acknowledgement of {ab}");
            await b.WaitForLineAsync(l => l == "SENT " + ba, $"the peer's acknowledgement of {ba}");
        }
    }

    private static Task WaitForMetricAsync(LabRelayServer server, string family, string label, string context) =>
        Poll.UntilAsync(async () => await server.MetricAsync(family, label) >= 1, $"{family}{{{label}}} to count", TimeSpan.FromSeconds(60), TimeSpan.FromMilliseconds(200), () => Task.FromResult(context));

    private static void Record(NatType a, NatType b, bool birthday, string path, double firstMessageMs, double? directMs)
    {
        if (Environment.GetEnvironmentVariable("RELAY_RENDEZVOUS_TIMINGS") is not { Length: > 0 } file)
        {
            return;
        }

        var line = string.Create(CultureInfo.InvariantCulture, $"{a},{b},{(birthday ? "birthday" : "no-birthday")},{path},{firstMessageMs:F1},{(directMs is { } d ? d.ToString("F1", CultureInfo.InvariantCulture) : string.Empty)}\n");
        File.AppendAllText(file, line);
    }
}
