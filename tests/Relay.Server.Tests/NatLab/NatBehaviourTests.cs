using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// Each lab router behaves as its <see cref="NatType"/> says, judged from the packets alone (RFC 4787):
/// udp_reporter.py in the server namespace reports the source address:port it saw (the NAT's mapping)
/// and sends unsolicited datagrams from its other address and port; udp_probe.py behind the NAT reports
/// which of them arrived (the NAT's filtering).
/// </summary>
[Collection(NatLabCollection.Name)]
public sealed class NatBehaviourTests
{
    private const int Port = 3479;
    private const int OtherPort = 3480;
    private static readonly string s_primary = Endpoint(NatLab.ServerAddress, Port);

    [NatLabTheory]
    [InlineData(NatType.Easy)]
    [InlineData(NatType.FullCone)]
    [InlineData(NatType.AddressRestricted)]
    [InlineData(NatType.Symmetric)]
    public async Task Udp_mapping_and_filtering_match_the_nat_type(NatType type)
    {
        await using var lab = await NatLab.CreateAsync(type);
        var site = lab.Sites[0];
        await using var reporter = await LabScripts.StartReporterAsync(lab, Port, OtherPort);

        // RFC 4787 section 4.1: one socket, three destinations (other port; other address).
        string[] destinations = [s_primary, Endpoint(NatLab.ServerAddress, OtherPort), Endpoint(NatLab.ServerAlternateAddress, Port)];
        var map = await LabScripts.ProbeAsync(lab, site, "map", destinations);
        var mapped = destinations.Select(d => LabScripts.Mapped(map, d)).ToList();
        Assert.All(mapped, m => Assert.True(m is not null && m.StartsWith(site.WanAddress + ":", StringComparison.Ordinal), $"the server must see the router's WAN address {site.WanAddress}\n{map}\n{reporter.Transcript}"));
        var distinctPorts = mapped.Distinct().Count();
        if (type == NatType.Symmetric)
        {
            // random,fully-random: a fresh random port per destination; all three equal by chance is ~1 in 4e9.
            Assert.True(distinctPorts > 1, $"a symmetric NAT must map each destination to its own port\n{map}");
        }
        else
        {
            Assert.True(distinctPorts == 1, $"endpoint-independent mapping must reuse one external port for every destination\n{map}");
        }

        // RFC 4787 section 5: a fresh socket contacts only the primary endpoint; the reporter answers
        // from it and, unsolicited, from its other port, its other address, and both.
        var dropsBefore = await lab.CounterAsync(site, "input_drops");
        var filter = await LabScripts.ProbeAsync(lab, site, "filter", [s_primary]);
        Assert.Contains("FILTERED", filter.Stdout, StringComparison.Ordinal);
        var arrived = filter.Stdout.Split('\n').Where(l => l.StartsWith("FROM ", StringComparison.Ordinal)).Select(l => l[5..].Trim()).Order(StringComparer.Ordinal).ToArray();
        string[] expected = type switch
        {
            NatType.FullCone => [Endpoint(NatLab.ServerAddress, OtherPort), Endpoint(NatLab.ServerAlternateAddress, Port), Endpoint(NatLab.ServerAlternateAddress, OtherPort)],
            NatType.AddressRestricted => [Endpoint(NatLab.ServerAddress, OtherPort)],
            _ => [],
        };
        Assert.True(expected.SequenceEqual(arrived), $"{type}: unsolicited datagrams let in: [{string.Join(", ", arrived)}], expected [{string.Join(", ", expected)}]\n{filter}\n{await lab.DescribeAsync()}");

        // What was kept out was dropped by the router's input chain, not lost on the way.
        var dropped = await lab.CounterAsync(site, "input_drops") - dropsBefore;
        Assert.True(dropped >= 3 - expected.Length, $"{type}: the router's input chain dropped {dropped} packets\n{await lab.DescribeAsync()}");
    }

    [NatLabFact]
    public async Task Udp_blocked_drops_every_datagram_but_tcp_gets_through()
    {
        await using var lab = await NatLab.CreateAsync(NatType.UdpBlocked);
        var site = lab.Sites[0];
        await using var reporter = await LabScripts.StartReporterAsync(lab, Port, OtherPort);

        var map = await LabScripts.ProbeAsync(lab, site, "map", [s_primary]);
        Assert.Contains("NOREPLY " + s_primary, map.Stdout, StringComparison.Ordinal);
        Assert.True(await lab.CounterAsync(site, "udp_drops") > 0, $"the router must have dropped the probe's datagrams\n{await lab.DescribeAsync()}");
        Assert.DoesNotContain(reporter.StdoutLines, l => l.StartsWith("GOT MAP", StringComparison.Ordinal));

        var tcp = await LabScripts.ProbeAsync(lab, site, "tcp", [s_primary]);
        Assert.StartsWith(site.WanAddress + ":", LabScripts.Mapped(tcp, s_primary) ?? string.Empty, StringComparison.Ordinal);
    }

    [NatLabFact]
    public async Task Our_stun_server_sees_each_nat_as_its_type()
    {
        await using var lab = await NatLab.CreateAsync(NatType.Easy, NatType.FullCone, NatType.AddressRestricted, NatType.Symmetric, NatType.UdpBlocked);
        await using var server = await LabRelayServer.StartAsync(lab, devices: 0);

        // RFC 5780 section 4.3: the primary, the alternate port and the alternate address (OTHER-ADDRESS),
        // seen from one socket. Three, so a symmetric NAT's random ports all colliding is ~1 in 4e9.
        string[] servers =
        [
            Endpoint(NatLab.ServerAddress, LabRelayServer.StunPort),
            Endpoint(NatLab.ServerAddress, LabRelayServer.StunPort + 1),
            Endpoint(NatLab.ServerAlternateAddress, LabRelayServer.StunPort + 1),
        ];
        foreach (var site in lab.Sites)
        {
            var stun = await LabScripts.ProbeAsync(lab, site, "stun", servers);
            var mapped = servers.Select(d => LabScripts.Mapped(stun, d)).ToList();
            if (site.Type == NatType.UdpBlocked)
            {
                Assert.All(mapped, Assert.Null);
                continue;
            }

            Assert.All(mapped, m => Assert.True(m is not null && m.StartsWith(site.WanAddress + ":", StringComparison.Ordinal), $"{site.Type}: XOR-MAPPED-ADDRESS must be the router's WAN address\n{stun}\n{server.Process.Transcript}"));
            Assert.True(mapped.Distinct().Count() == 1 == (site.Type != NatType.Symmetric), $"{site.Type}: one external port for every server exactly when the mapping is endpoint-independent\n{stun}");
        }
    }

    [NatLabFact]
    public async Task Dispose_removes_every_namespace_and_link_and_a_new_lab_sweeps_dead_ones()
    {
        // A namespace named as a lab of a process that is gone stands for a run that was killed.
        var dead = System.Diagnostics.Process.Start("true")!;
        await dead.WaitForExitAsync();
        var stale = $"{NatLab.Prefix}{dead.Id}-1-pub";
        dead.Dispose();
        Assert.True((await LabShell.RunAsync("ip", ["netns", "add", stale])).Succeeded);

        IReadOnlyList<string> names;
        string hostLink;
        await using (var lab = await NatLab.CreateAsync(NatType.Easy, NatType.Symmetric))
        {
            names = lab.Namespaces;
            hostLink = lab.HostLink;
            Assert.True(hostLink.Length <= 15, hostLink);
            var existing = await NatLab.ListLabNamespacesAsync();
            Assert.DoesNotContain(stale, existing);
            Assert.All(names, n => Assert.Contains(n, existing));
            var process = lab.Start(lab.Sites[0].ClientNamespace, "/usr/bin/python3", ["-c", "import time; print('up', flush=True); time.sleep(600)"]);
            await process.WaitForLineAsync(l => l == "up", "a process inside the lab");
        }

        var after = await NatLab.ListLabNamespacesAsync();
        Assert.All(names, n => Assert.DoesNotContain(n, after));
        Assert.False((await LabShell.RunAsync("ip", ["link", "show", hostLink])).Succeeded, $"{hostLink} outlived its lab");
    }

    private static string Endpoint(string address, int port) => $"{address}:{port}";
}
