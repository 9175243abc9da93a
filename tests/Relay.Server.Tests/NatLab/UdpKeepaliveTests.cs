using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// The conntrack UDP timeout knob makes mapping expiry testable in seconds (issue 7's keepalive test,
/// shown here with the lab's own probe; the TURN-channel version belongs to DeviceClient): a mapping
/// refreshed more often than the timeout still reaches the client, one left idle is gone, and the
/// server's datagram to it is dropped by the router.
/// </summary>
[Collection(NatLabCollection.Name)]
public sealed class UdpKeepaliveTests
{
    private const int Port = 3479;
    private const int UdpTimeoutSeconds = 3;

    [NatLabTheory]
    [InlineData(NatType.Easy)]
    [InlineData(NatType.AddressRestricted)]
    public async Task A_kept_alive_mapping_outlives_the_udp_timeout_and_an_idle_one_does_not(NatType type)
    {
        await using var lab = await NatLab.CreateAsync(type, type);
        NatSite kept = lab.Sites[0], idle = lab.Sites[1];
        foreach (var site in lab.Sites)
        {
            await lab.SetUdpTimeoutAsync(site, UdpTimeoutSeconds);
        }

        await using var reporter = await LabScripts.StartReporterAsync(lab, Port, Port + 1);
        var server = $"{NatLab.ServerAddress}:{Port.ToString(CultureInfo.InvariantCulture)}";
        var keptProbe = StartHold(lab, kept, server, keepaliveSeconds: 1);
        var idleProbe = StartHold(lab, idle, server, keepaliveSeconds: 0);
        var keptMapping = (await keptProbe.WaitForLineAsync(l => l.StartsWith("MAPPED ", StringComparison.Ordinal), "the kept-alive mapping")).Split(' ')[2];
        var idleMapping = (await idleProbe.WaitForLineAsync(l => l.StartsWith("MAPPED ", StringComparison.Ordinal), "the idle mapping")).Split(' ')[2];

        // The legitimate wait: idle past twice the timeout and until conntrack has dropped the idle entry.
        var clock = Stopwatch.StartNew();
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            while (clock.Elapsed < TimeSpan.FromSeconds(2 * UdpTimeoutSeconds) || await EntryAsync(lab, idle) is not null)
            {
                Assert.True(await EntryAsync(lab, kept) is not null, $"the kept-alive mapping expired after {clock.Elapsed.TotalSeconds:F1} s\n{keptProbe.Transcript}\n{await lab.DescribeAsync()}");
                Assert.False(deadline.IsCancellationRequested, $"the idle mapping outlived its {UdpTimeoutSeconds} s timeout by far\n{await lab.DescribeAsync()}");
                await Task.Delay(250, CancellationToken.None);
            }
        }

        var dropsBefore = await lab.CounterAsync(idle, "input_drops");
        await PokeAsync(keptMapping);
        await PokeAsync(idleMapping);
        await keptProbe.WaitForLineAsync(l => l == "POKED " + server, "the server's datagram through the kept-alive mapping");

        // The idle site: the router's input chain dropped the datagram (nothing maps that port any more).
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (await lab.CounterAsync(idle, "input_drops") <= dropsBefore)
            {
                Assert.False(deadline.IsCancellationRequested, $"the router never dropped the datagram to the expired mapping\n{idleProbe.Transcript}\n{await lab.DescribeAsync()}");
                await Task.Delay(100, CancellationToken.None);
            }
        }

        Assert.DoesNotContain(idleProbe.StdoutLines, l => l.StartsWith("POKED", StringComparison.Ordinal));
    }

    private static ToolProcess StartHold(NatLab lab, NatSite site, string server, int keepaliveSeconds) =>
        lab.Start(site.ClientNamespace, "/usr/bin/python3",
        [
            Path.Combine(LabScripts.Directory, "udp_probe.py"), "hold", "--to", server,
            "--keepalive", keepaliveSeconds.ToString(CultureInfo.InvariantCulture), "--duration", "120",
        ]);

    /// <summary>Asks the reporter (from the test process, over the root veth) to send one datagram to <paramref name="mapping"/>.</summary>
    private static async Task PokeAsync(string mapping)
    {
        using var udp = new UdpClient(AddressFamily.InterNetwork);
        var token = Guid.NewGuid().ToString("N");
        await udp.SendAsync(Encoding.ASCII.GetBytes($"POKE {token} {mapping}"), new IPEndPoint(IPAddress.Parse(NatLab.ServerAddress), Port));
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (true)
        {
            var reply = await udp.ReceiveAsync(deadline.Token);
            if (Encoding.ASCII.GetString(reply.Buffer) == "POKING " + token)
            {
                return;
            }
        }
    }

    private static async Task<string?> EntryAsync(NatLab lab, NatSite site) =>
        (await lab.ConntrackAsync(site, "udp")).FirstOrDefault(l => l.Contains($"src={site.ClientAddress} ", StringComparison.Ordinal) && l.Contains($"dport={Port.ToString(CultureInfo.InvariantCulture)} ", StringComparison.Ordinal));
}
