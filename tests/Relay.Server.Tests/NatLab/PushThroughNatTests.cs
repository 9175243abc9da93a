using System.Diagnostics;
using System.Globalization;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// Issue 7: a device behind each NAT type receives commands pushed through the HTTP API over its MQTT
/// connection, and with a short TCP conntrack timeout the MQTT keep-alive is what holds the path open.
/// Our server runs as a process in the lab's server namespace; the devices are paho (nat_device.py) in
/// the client namespaces; the test drives the push API through the lab's root veth.
/// </summary>
[Collection(NatLabCollection.Name)]
public sealed class PushThroughNatTests
{
    private const int ShortTcpTimeoutSeconds = 8;

    [NatLabFact]
    public async Task A_device_behind_every_nat_type_receives_its_pushed_command()
    {
        await using var lab = await NatLab.CreateAsync(NatType.Easy, NatType.FullCone, NatType.AddressRestricted, NatType.Symmetric, NatType.UdpBlocked);
        await using var server = await LabRelayServer.StartAsync(lab, lab.Sites.Count);
        var devices = new List<ToolProcess>();
        foreach (var site in lab.Sites)
        {
            devices.Add(await LabRelayServer.StartDeviceAsync(lab, site, keepAliveSeconds: 30));
        }

        foreach (var site in lab.Sites)
        {
            // From the packets: the router translated the device's connection to its WAN address, so the
            // server talks to the NAT, not to the device's private address.
            var entry = await MqttEntryAsync(lab, site);
            Assert.True(entry is not null && entry.Contains($"dst={site.WanAddress} sport={LabRelayServer.MqttPort}", StringComparison.Ordinal),
                $"{site.Type}: no NATed MQTT connection in the router's conntrack table\n{await lab.DescribeAsync()}");
        }

        var ids = new List<string>();
        foreach (var site in lab.Sites)
        {
            ids.Add(await PushTestKit.PushAsync(server.Http, LabRelayServer.DeviceId(site.Index), "blink-" + site.Type));
        }

        for (var i = 0; i < lab.Sites.Count; i++)
        {
            var id = ids[i];
            await devices[i].WaitForLineAsync(l => l.StartsWith("CMD ", StringComparison.Ordinal) && l.Contains(id, StringComparison.Ordinal), $"the command behind the {lab.Sites[i].Type} NAT");
            var state = await PushTestKit.GetAsync(server.Http, id, wait: 30);
            Assert.True(state.GetProperty("state").GetString() == "succeeded", $"{lab.Sites[i].Type}: {state}\n{devices[i].Transcript}");
        }
    }

    [NatLabFact]
    public async Task Mqtt_keep_alive_holds_the_nat_path_and_a_device_without_it_misses_the_push()
    {
        await using var lab = await NatLab.CreateAsync(NatType.Easy, NatType.Easy);
        NatSite kept = lab.Sites[0], control = lab.Sites[1];
        foreach (var site in lab.Sites)
        {
            await lab.SetTcpEstablishedTimeoutAsync(site, ShortTcpTimeoutSeconds);
        }

        await using var server = await LabRelayServer.StartAsync(lab, lab.Sites.Count);

        // Keep-alive 3 s, shorter than the router's 8 s: PINGREQ/PINGRESP refresh the conntrack entry.
        // The control's 60 s keep-alive sends nothing for longer than the whole test's idle period.
        var keptDevice = await LabRelayServer.StartDeviceAsync(lab, kept, keepAliveSeconds: 3);
        var controlDevice = await LabRelayServer.StartDeviceAsync(lab, control, keepAliveSeconds: 60);

        // The one legitimate wait: idle past twice the timeout, and until the control's entry is gone.
        // Polled, so the test moves on as soon as conntrack has actually expired the entry.
        var idle = Stopwatch.StartNew();
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(90)))
        {
            while (idle.Elapsed < TimeSpan.FromSeconds(2 * ShortTcpTimeoutSeconds) || await MqttEntryAsync(lab, control) is not null)
            {
                var entry = await MqttEntryAsync(lab, kept);
                Assert.True(entry is not null && entry.Contains("ESTABLISHED", StringComparison.Ordinal),
                    $"the kept-alive device's conntrack entry vanished after {idle.Elapsed.TotalSeconds:F1} s\n{keptDevice.Transcript}\n{await lab.DescribeAsync()}");
                Assert.False(deadline.IsCancellationRequested, $"the control's conntrack entry outlived {ShortTcpTimeoutSeconds} s by far\n{await lab.DescribeAsync()}");
                await Task.Delay(500, CancellationToken.None);
            }
        }

        var dropsBefore = await lab.CounterAsync(control, "input_drops");
        var keptId = await PushTestKit.PushAsync(server.Http, LabRelayServer.DeviceId(kept.Index), "after-idle");
        var controlId = await PushTestKit.PushAsync(server.Http, LabRelayServer.DeviceId(control.Index), "after-idle");

        await keptDevice.WaitForLineAsync(l => l.StartsWith("CMD ", StringComparison.Ordinal) && l.Contains(keptId, StringComparison.Ordinal), "the command to the kept-alive device");
        var keptState = await PushTestKit.GetAsync(server.Http, keptId, wait: 30);
        Assert.True(keptState.GetProperty("state").GetString() == "succeeded", keptState.ToString());

        // The control fails deterministically: the router has no entry for the connection any more, so the
        // server's PUBLISH (and its retransmission) lands in the router's own input chain and is dropped.
        // Observed as that drop count rising, not as the absence of something within a time window.
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (await lab.CounterAsync(control, "input_drops") < dropsBefore + 2)
            {
                Assert.False(deadline.IsCancellationRequested, $"the router never dropped the server's PUBLISH\n{controlDevice.Transcript}\n{await lab.DescribeAsync()}");
                await Task.Delay(100, CancellationToken.None);
            }
        }

        var controlState = await PushTestKit.GetAsync(server.Http, controlId);
        Assert.Equal("queued", controlState.GetProperty("state").GetString());
        Assert.DoesNotContain(controlDevice.StdoutLines, l => l.StartsWith("CMD ", StringComparison.Ordinal));
        Assert.Null(await MqttEntryAsync(lab, control));
    }

    /// <summary>The router's conntrack line for the site's client's MQTT connection, or null.</summary>
    private static async Task<string?> MqttEntryAsync(NatLab lab, NatSite site)
    {
        var port = "dport=" + LabRelayServer.MqttPort.ToString(CultureInfo.InvariantCulture) + " ";
        return (await lab.ConntrackAsync(site, "tcp")).FirstOrDefault(l => l.Contains($"src={site.ClientAddress} ", StringComparison.Ordinal) && l.Contains(port, StringComparison.Ordinal));
    }
}
