using System.Globalization;
using System.Text.RegularExpressions;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// Issue 7 §2, "the path is re-established when a mapping dies" (docs/rendezvous.md, "Keepalives"): two
/// PeerDemo devices behind easy NATs go direct with keepalives every second. Then router A drops every
/// UDP datagram between its client and B's WAN address (both ways; the server stays reachable). Three
/// unanswered keepalives in a row send both sides back to the relay, and a message sent then crosses the
/// relay ports while nothing from A's NAT reaches B. Then A's conntrack entries towards B are deleted
/// and the drop rule removed, well after the checks re-run after the drop have ended (both sides printed
/// <c>CHECKS ended relayed</c>): the periodic re-checks make a new mapping, both sides print <c>PATH direct</c>
/// again, and the next message arrives from A's WAN address with the relay ports flat.
/// </summary>
[Collection(NatLabCollection.Name)]
public sealed partial class RendezvousPathRecoveryTests
{
    // Both the table and its counter: the drop rule lives apart from the router's own "ip lab" table, so
    // removing it is deleting one table, and the router's ruleset is untouched.
    private const string CutTable = "cut";

    // A short check window and short re-checks: the cut is lifted only after both sides printed that the window
    // after the drop ended (CHECKS ended), so only a re-check (PeerOptions.RecheckInterval) can bring the path back.
    private static readonly string[] s_options = ["--no-host", "--keepalive", "1", "--check-timeout", "3", "--recheck", "2"];

    [NatLabFact]
    public async Task A_direct_path_whose_mapping_dies_falls_back_to_the_relay_and_comes_back_direct()
    {
        await using var lab = await NatLab.CreateAsync(NatType.Easy, NatType.Easy);
        NatSite siteA = lab.Sites[0], siteB = lab.Sites[1];
        await using var server = await LabRelayServer.StartAsync(lab, 2);
        var evidence = await PacketEvidence.InstallAsync(lab);

        var peerB = LabPeer.Start(lab, siteB, s_options);
        await peerB.WaitForLineAsync(l => l.StartsWith("CONNECTED", StringComparison.Ordinal), "connecting to the server", TimeSpan.FromSeconds(60));
        var peerA = LabPeer.Start(lab, siteA, [.. s_options, "--connect", LabRelayServer.DeviceId(siteB.Index)]);
        peerA.Other = peerB;
        peerB.Other = peerA;
        peerA.Describe = peerB.Describe = async () => $"{await server.DescribeRendezvousAsync()}{await evidence.DescribeAsync()}{await CutDescriptionAsync(lab, siteA)}{await lab.DescribeAsync()}";

        async Task<string> Context() =>
            $"{peerA.Transcript}\n{await server.DescribeRendezvousAsync()}{await evidence.DescribeAsync()}{await CutDescriptionAsync(lab, siteA)}{await lab.DescribeAsync()}";

        // 1. Direct, as in the matrix test: each side names the other NAT, and a message crosses no relay port.
        var (_, addressA, _) = await peerA.WaitForDirectAsync("the direct path", TimeSpan.FromSeconds(45));
        var (_, addressB, _) = await peerB.WaitForDirectAsync("the direct path", TimeSpan.FromSeconds(45));
        Assert.True(addressA == siteB.WanAddress && addressB == siteA.WanAddress, "each side's direct path must name the other NAT's WAN address\n" + await Context());
        var relay = await evidence.RelayAsync();
        var fromA = await evidence.FromPeerAsync(siteB, siteA);
        await SendAndConfirmAsync(peerA, peerB, "direct-1");
        await AssertRelayFlatAsync(evidence, relay, "direct-1", Context);
        Assert.True(await evidence.FromPeerAsync(siteB, siteA) > fromA, "direct-1 did not arrive from A's NAT\n" + await Context());

        // 2. The mapping dies for the peer only: router A drops A's client <-> B's WAN address, the server stays reachable.
        int markA = peerA.LineCount, markB = peerB.LineCount;
        await CutAsync(lab, siteA, siteB);
        await peerA.WaitForLineAsync(l => l.StartsWith("PATH relayed ", StringComparison.Ordinal), "falling back to the relay after the cut", TimeSpan.FromSeconds(30), markA);
        await peerB.WaitForLineAsync(l => l.StartsWith("PATH relayed ", StringComparison.Ordinal), "falling back to the relay after the cut", TimeSpan.FromSeconds(30), markB);
        Assert.True(await CutDropsAsync(lab, siteA) > 0, "both sides fell back, but the cut dropped nothing\n" + await Context());

        // The window of checks after the drop ends on both sides with the path still cut; only re-checks remain.
        await peerA.WaitForLineAsync(l => l == "CHECKS ended relayed", "the end of the checks after the drop", TimeSpan.FromSeconds(30), markA);
        await peerB.WaitForLineAsync(l => l == "CHECKS ended relayed", "the end of the checks after the drop", TimeSpan.FromSeconds(30), markB);

        // 3. Relayed now: the message arrives at B although nothing from A's NAT reaches B, and the relay ports carry it.
        relay = await evidence.RelayAsync();
        fromA = await evidence.FromPeerAsync(siteB, siteA);
        var fromServer = await evidence.FromServerAsync(siteB);
        await SendAndConfirmAsync(peerA, peerB, "relayed-1");
        var relayAfter = await evidence.RelayAsync();
        Assert.Equal(fromA, await evidence.FromPeerAsync(siteB, siteA));
        Assert.True(await evidence.FromServerAsync(siteB) > fromServer, "relayed-1 arrived at B, but not from the server\n" + await Context());
        Assert.True(relayAfter.TotalOut - relay.TotalOut >= 2,
            $"relayed-1 and its acknowledgement did not cross the relay ports: before {relay}, after {relayAfter}\n{await Context()}");
        Assert.DoesNotContain(peerA.Lines.Skip(markA), l => l.Text.StartsWith("PATH direct ", StringComparison.Ordinal));

        // 4. The path comes back with a new mapping: A's conntrack entries towards B go first (the cut keeps a new
        // one from being confirmed meanwhile), then the cut. A re-check round (every 2 s) makes the mapping again.
        await ForgetMappingAsync(lab, siteA, siteB);
        Assert.Null(await DirectEntryAsync(lab, siteA, siteB));
        markA = peerA.LineCount;
        markB = peerB.LineCount;
        await LabShell.MustAsync(LabShell.Require("ip"), ["netns", "exec", siteA.RouterNamespace, LabShell.Require("nft"), "delete", "table", "ip", CutTable]);
        (_, addressA, _) = await peerA.WaitForDirectAsync("the direct path again after the cut is lifted", TimeSpan.FromSeconds(30), markA);
        (_, addressB, _) = await peerB.WaitForDirectAsync("the direct path again after the cut is lifted", TimeSpan.FromSeconds(30), markB);
        Assert.True(addressA == siteB.WanAddress && addressB == siteA.WanAddress, "each side's recovered path must name the other NAT's WAN address\n" + await Context());
        Assert.NotNull(await DirectEntryAsync(lab, siteA, siteB));

        relay = await evidence.RelayAsync();
        fromA = await evidence.FromPeerAsync(siteB, siteA);
        var fromB = await evidence.FromPeerAsync(siteA, siteB);
        await SendAndConfirmAsync(peerA, peerB, "recovered-1");
        await AssertRelayFlatAsync(evidence, relay, "recovered-1", Context);
        Assert.True(await evidence.FromPeerAsync(siteB, siteA) > fromA, "recovered-1 did not arrive from A's NAT\n" + await Context());
        Assert.True(await evidence.FromPeerAsync(siteA, siteB) > fromB, "the acknowledgement of recovered-1 did not arrive from B's NAT\n" + await Context());
        foreach (var (peer, mark) in new[] { (peerA, markA), (peerB, markB) })
        {
            Assert.True(!peer.Lines.Skip(mark).Any(l => l.Text.StartsWith("PATH relayed ", StringComparison.Ordinal)), $"{peer.Name} fell back to the relay again\n{await Context()}");
        }
    }

    /// <summary>QoS 1: <c>SENT</c> means the peer acknowledged it.</summary>
    private static async Task SendAndConfirmAsync(LabPeer from, LabPeer to, string text)
    {
        await from.SendAsync(text);
        await to.WaitForReceivedAsync(text);
        await from.WaitForLineAsync(l => l == "SENT " + text, $"the acknowledgement of {text}");
    }

    private static async Task AssertRelayFlatAsync(PacketEvidence evidence, RelayCounts before, string text, Func<Task<string>> context)
    {
        var after = await evidence.RelayAsync();
        Assert.True(before.TotalIn == after.TotalIn && before.TotalOut == after.TotalOut,
            $"{text} crossed the relay: before {before}, after {after}\n{await context()}");
    }

    /// <summary>
    /// In router <paramref name="at"/>'s forward hook, before its filter chain (and so before its
    /// <c>ct state established</c> accept): drop UDP between its client and <paramref name="other"/>'s WAN address,
    /// both ways, counted. Inbound datagrams are already translated back to the client's address there.
    /// </summary>
    private static Task CutAsync(NatLab lab, NatSite at, NatSite other) =>
        LabShell.MustAsync(LabShell.Require("ip"), ["netns", "exec", at.RouterNamespace, LabShell.Require("nft"), "-f", "-"], $$"""
            table ip {{CutTable}} {
              counter drops { }
              chain forward {
                type filter hook forward priority -10; policy accept;
                meta l4proto udp ip saddr {{at.ClientAddress}} ip daddr {{other.WanAddress}} counter name drops drop
                meta l4proto udp ip saddr {{other.WanAddress}} ip daddr {{at.ClientAddress}} counter name drops drop
              }
            }

            """);

    private static async Task<long> CutDropsAsync(NatLab lab, NatSite at)
    {
        var result = await lab.RunAsync(at.RouterNamespace, "nft", "list", "counter", "ip", CutTable, "drops");
        var match = PacketsPattern().Match(result.Stdout);
        return match.Success ? long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : throw new InvalidOperationException("NAT lab: no cut counter\n" + result);
    }

    private static async Task<string> CutDescriptionAsync(NatLab lab, NatSite at)
    {
        var result = await lab.RunAsync(at.RouterNamespace, "nft", "list", "table", "ip", CutTable);
        return result.Succeeded ? $"== cut in {at.RouterNamespace}\n{result.Stdout}" : $"== no cut in {at.RouterNamespace}\n";
    }

    /// <summary>
    /// Deletes router <paramref name="at"/>'s UDP conntrack entries from its client to <paramref name="other"/>'s
    /// WAN address, so the next datagram there makes a new mapping. conntrack exits 1 when nothing matched,
    /// so the caller checks the table instead of the exit code.
    /// </summary>
    private static Task ForgetMappingAsync(NatLab lab, NatSite at, NatSite other) =>
        lab.RunAsync(at.RouterNamespace, "conntrack", "-D", "-p", "udp", "--orig-src", at.ClientAddress, "--orig-dst", other.WanAddress);

    /// <summary>The router's conntrack entry of the client's direct path to the other NAT, or null.</summary>
    private static async Task<string?> DirectEntryAsync(NatLab lab, NatSite at, NatSite other) =>
        (await lab.ConntrackAsync(at, "udp")).FirstOrDefault(l =>
            l.Contains($"src={at.ClientAddress} dst={other.WanAddress} ", StringComparison.Ordinal));

    [GeneratedRegex(@"packets (\d+)")]
    private static partial Regex PacketsPattern();
}
