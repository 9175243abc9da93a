using System.Diagnostics;
using System.Globalization;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// Issue 7 §3, the keepalive test: both routers get a 3 s conntrack UDP timeout, the two PeerDemo devices
/// go direct, and the channel is then left idle for more than twice that. With keepalives every second
/// the direct mapping stays in both routers' conntrack tables all along and the next message still
/// arrives over it: from the other NAT's WAN address, with the relay ports flat. With keepalives
/// effectively off (an hour) the same run fails: the mappings expire, the next message reaches the other
/// router with nothing to map it to and is dropped there (its <c>input_drops</c> counter), and nothing
/// arrives from the other NAT.
/// </summary>
[Collection(NatLabCollection.Name)]
public sealed class RendezvousKeepaliveTests
{
    private const int UdpTimeoutSeconds = 3;

    [NatLabTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_direct_channel_idle_past_the_udp_timeout_still_delivers_only_with_keepalives(bool keepalives)
    {
        await using var lab = await NatLab.CreateAsync(NatType.Easy, NatType.Easy);
        NatSite siteA = lab.Sites[0], siteB = lab.Sites[1];
        foreach (var site in lab.Sites)
        {
            await lab.SetUdpTimeoutAsync(site, UdpTimeoutSeconds);
        }

        await using var server = await LabRelayServer.StartAsync(lab, 2);
        var evidence = await PacketEvidence.InstallAsync(lab);
        string[] common = ["--no-host", "--keepalive", keepalives ? "1" : "3600"];
        var peerB = LabPeer.Start(lab, siteB, common);
        await peerB.WaitForLineAsync(l => l.StartsWith("CONNECTED", StringComparison.Ordinal), "connecting to the server", TimeSpan.FromSeconds(60));
        var peerA = LabPeer.Start(lab, siteA, [.. common, "--connect", LabRelayServer.DeviceId(siteB.Index)]);
        peerA.Other = peerB;
        peerB.Other = peerA;
        peerA.Describe = peerB.Describe = async () => $"{await server.DescribeRendezvousAsync()}{await evidence.DescribeAsync()}{await lab.DescribeAsync()}";

        async Task<string> Context() => $"keepalives {keepalives}\n{peerA.Transcript}\n{await server.DescribeRendezvousAsync()}{await evidence.DescribeAsync()}{await lab.DescribeAsync()}";

        await peerA.WaitForDirectAsync("the direct path", TimeSpan.FromSeconds(45));
        await peerB.WaitForDirectAsync("the direct path", TimeSpan.FromSeconds(45));
        await peerA.SendAsync("before-idle");
        await peerB.WaitForReceivedAsync("before-idle");
        await peerA.WaitForLineAsync(l => l == "SENT before-idle", "the acknowledgement of before-idle");
        Assert.NotNull(await DirectEntryAsync(lab, siteA, siteB));

        // The legitimate wait: idle past twice the timeout, and (without keepalives) until both routers have
        // dropped the mapping. Polled, so the kept-alive run also proves the entry was there at every poll.
        var idle = Stopwatch.StartNew();
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            while (true)
            {
                var entryA = await DirectEntryAsync(lab, siteA, siteB);
                var entryB = await DirectEntryAsync(lab, siteB, siteA);
                if (keepalives)
                {
                    Assert.True(entryA is not null && entryB is not null, $"the kept-alive direct mapping expired after {idle.Elapsed.TotalSeconds:F1} s\n{await Context()}");
                }

                if (idle.Elapsed >= TimeSpan.FromSeconds(2 * UdpTimeoutSeconds) && (keepalives || (entryA is null && entryB is null)))
                {
                    break;
                }

                Assert.False(deadline.IsCancellationRequested, $"the idle direct mapping outlived its {UdpTimeoutSeconds} s timeout by far\n{await Context()}");
                await Task.Delay(250, CancellationToken.None);
            }
        }

        var relayBefore = await evidence.RelayAsync();
        var fromA = await evidence.FromPeerAsync(siteB, siteA);
        var dropsB = await lab.CounterAsync(siteB, "input_drops");
        await peerA.SendAsync("after-idle");
        if (keepalives)
        {
            await peerB.WaitForReceivedAsync("after-idle");
            await peerA.WaitForLineAsync(l => l == "SENT after-idle", "the acknowledgement of after-idle");
            var relayAfter = await evidence.RelayAsync();
            Assert.True(await evidence.FromPeerAsync(siteB, siteA) > fromA, "after-idle did not arrive from A's NAT\n" + await Context());
            Assert.True(relayBefore.TotalIn == relayAfter.TotalIn && relayBefore.TotalOut == relayAfter.TotalOut,
                $"after-idle crossed the relay: before {relayBefore}, after {relayAfter}\n{await Context()}");
            foreach (var peer in new[] { peerA, peerB })
            {
                Assert.True(!peer.Paths.SkipWhile(p => p.Path != "direct").Any(p => p.Path == "relayed"), $"{peer.Name} fell back to the relay after going direct\n{await Context()}");
            }
            Assert.Equal(dropsB, await lab.CounterAsync(siteB, "input_drops"));
        }
        else
        {
            // The failure the keepalives prevent, observed where it happens: B's router drops A's datagram.
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (await lab.CounterAsync(siteB, "input_drops") <= dropsB)
            {
                Assert.False(deadline.IsCancellationRequested, "B's router never dropped the message sent over the expired mapping\n" + await Context());
                await Task.Delay(100, CancellationToken.None);
            }

            Assert.Equal(fromA, await evidence.FromPeerAsync(siteB, siteA));
            Assert.DoesNotContain(peerB.Lines, l => l.Text == "RECV after-idle");
        }
    }

    /// <summary>The router's conntrack entry of the client's direct path to the other NAT, or null.</summary>
    private static async Task<string?> DirectEntryAsync(NatLab lab, NatSite at, NatSite other) =>
        (await lab.ConntrackAsync(at, "udp")).FirstOrDefault(l =>
            l.Contains($"src={at.ClientAddress} dst={other.WanAddress} ", StringComparison.Ordinal));
}
