using System.Text.Json;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>
/// Issue 5 §2: every accepted command (202) survives kill -9. The server runs out of process (the MQTT
/// interop harness), so SIGKILL is a real crash with nothing flushed on its behalf.
/// </summary>
public sealed class CommandDurabilityTests
{
    [Fact]
    public async Task Commands_accepted_for_an_offline_device_survive_SIGKILL_and_each_result_is_recorded_once()
    {
        const string token = "durability-token-0123456789";
        await using var broker = await RelayBroker.StartAsync([$"--Relay:Api:BootstrapToken={token}"]);
        var ids = new List<string>();
        using (var http = PushTestKit.Client(broker.HttpPort, token))
        {
            for (var i = 0; i < 20; i++)
            {
                ids.Add(await PushTestKit.PushAsync(http, "d1", "cmd" + i, $"{{\"n\":{i}}}"));
            }
        }

        // 1. accepted (202) for an offline device, 2. SIGKILL, then a restart on the same data directory.
        await broker.KillAsync();
        await broker.RestartAsync();

        // 3. The device connects (paho, MQTT 5): every command arrives, oldest first.
        await using (var device = ToolProcess.Start("/usr/bin/python3", [PushTestKit.DeviceScript, "--port", broker.TcpPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "--id", "d1", "--secret", MqttBroker.Secret("d1"), "--count", "20"], TimeSpan.FromMinutes(2)))
        {
            Assert.Equal(0, await device.WaitForExitAsync("device"));
            Assert.Equal(ids, PushTestKit.ReceivedIds(device).Distinct());
        }

        // 4. Every result is recorded, exactly once, and survives another SIGKILL.
        using (var http = PushTestKit.Client(broker.HttpPort, token))
        {
            foreach (var id in ids)
            {
                Assert.Equal("succeeded", (await PushTestKit.GetAsync(http, id, wait: 30)).GetProperty("state").GetString());
            }
        }

        await broker.KillAsync();
        await broker.RestartAsync();
        using (var http = PushTestKit.Client(broker.HttpPort, token))
        {
            for (var i = 0; i < ids.Count; i++)
            {
                var command = await PushTestKit.GetAsync(http, ids[i]);
                Assert.Equal("succeeded", command.GetProperty("state").GetString());
                Assert.Equal("cmd" + i, command.GetProperty("result").GetProperty("echo").GetString());
                Assert.Equal(["queued", "delivered", "succeeded"], command.GetProperty("transitions").EnumerateArray().Select(static t => t.GetProperty("state").GetString()!).ToArray());
            }
        }
    }
}
