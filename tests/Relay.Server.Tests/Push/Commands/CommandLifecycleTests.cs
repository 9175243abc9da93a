using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Mqtt;
using Relay.Server.Push;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>
/// The command lifecycle (issue 5 §2, §3) over real HTTP and real MQTT devices: a paho device
/// (scripts/command_device.py) and one made of nothing but mosquitto_sub / mosquitto_pub.
/// </summary>
public sealed class CommandLifecycleTests
{
    [Theory]
    [InlineData("5")]
    [InlineData("3")]
    public async Task A_command_to_an_online_device_is_delivered_and_its_result_recorded(string version)
    {
        await using var kit = await PushTestKit.StartAsync();
        await using var device = PushTestKit.StartDevice(kit.Server.MqttPort, "d1", count: 1, version);
        await device.WaitForLineAsync(static l => l == "READY", "device subscribed");

        var id = await PushTestKit.PushAsync(kit.Http, "d1", "blink", "{\"times\":3}");
        var final = await PushTestKit.GetAsync(kit.Http, id, wait: 30);

        Assert.Equal("succeeded", final.GetProperty("state").GetString());
        Assert.Equal("blink", final.GetProperty("result").GetProperty("echo").GetString());
        Assert.Equal(["queued", "delivered", "succeeded"], final.GetProperty("transitions").EnumerateArray().Select(static t => t.GetProperty("state").GetString()!).ToArray());

        // The envelope of docs/push.md; for MQTT 5 also the request/response properties.
        var command = JsonDocument.Parse((await device.WaitForLineAsync(static l => l.StartsWith("CMD ", StringComparison.Ordinal), "command"))[4..]).RootElement;
        Assert.Equal(id, command.GetProperty("id").GetString());
        Assert.Equal("blink", command.GetProperty("name").GetString());
        Assert.Equal(3, command.GetProperty("payload").GetProperty("times").GetInt32());
        Assert.True(DateTimeOffset.TryParse(command.GetProperty("expiresAt").GetString(), out _));
        if (version == "5")
        {
            Assert.Contains($"PROPS devices/d1/results {id}", device.StdoutLines);
        }

        await device.WaitForExitAsync("device");
        var announced = kit.Sink.Transitions.Where(t => t.CommandId == id).Select(static t => t.State).ToArray();
        Assert.Equal([CommandState.Queued, CommandState.Delivered, CommandState.Succeeded], announced);
    }

    [Fact]
    public async Task A_device_made_of_mosquitto_sub_and_mosquitto_pub_receives_a_command_and_reports_its_result()
    {
        await using var kit = await PushTestKit.StartAsync();
        var port = kit.Server.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture);

        // -C 1: exit after the first command; -q 1: the command is acknowledged (delivered).
        // stdbuf: mosquitto_sub's stdout into a pipe is block-buffered; line buffering lets the test see its SUBACK.
        await using var sub = ToolProcess.Start("stdbuf", ["-oL", ExternalTool.Find("mosquitto_sub"), "-h", "127.0.0.1", "-p", port, "-i", "d1", "-u", "d1", "-P", PushTestKit.Secret, "-q", "1", "-t", "devices/d1/commands", "-C", "1", "-V", "mqttv5", "-d"], TimeSpan.FromMinutes(1));
        await sub.WaitForLineAsync(static l => l.StartsWith("Subscribed (mid:", StringComparison.Ordinal), "mosquitto_sub subscribed");
        var id = await PushTestKit.PushAsync(kit.Http, "d1", "reboot", "{\"delay\":5}");
        var line = await sub.WaitForLineAsync(static l => l.StartsWith('{'), "the command body");
        Assert.Equal(id, JsonDocument.Parse(line).RootElement.GetProperty("id").GetString());
        await kit.Sink.WaitAsync(id, CommandState.Delivered);
        Assert.Equal(0, await sub.WaitForExitAsync("mosquitto_sub"));

        // A device connects with its own id as client id (the broker enforces it), so the result goes out after the subscriber left.
        await using var pub = ToolProcess.Start("mosquitto_pub", ["-h", "127.0.0.1", "-p", port, "-i", "d1", "-u", "d1", "-P", PushTestKit.Secret, "-q", "1", "-t", "devices/d1/results", "-m", $"{{\"id\":\"{id}\",\"status\":\"failed\",\"payload\":{{\"error\":\"busy\"}}}}"], TimeSpan.FromMinutes(1));
        Assert.Equal(0, await pub.WaitForExitAsync("mosquitto_pub"));

        var final = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
        Assert.Equal("failed", final.GetProperty("state").GetString());
        Assert.Equal("busy", final.GetProperty("result").GetProperty("error").GetString());
    }

    [Fact]
    public async Task An_offline_device_gets_its_commands_oldest_first_when_it_connects()
    {
        await using var kit = await PushTestKit.StartAsync();
        var ids = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            ids.Add(await PushTestKit.PushAsync(kit.Http, "d2", "step" + i));
        }

        await using var device = PushTestKit.StartDevice(kit.Server.MqttPort, "d2", count: 5);
        Assert.Equal(0, await device.WaitForExitAsync("device"));
        Assert.Equal(ids, PushTestKit.ReceivedIds(device));
        foreach (var id in ids)
        {
            Assert.Equal("succeeded", (await PushTestKit.GetAsync(kit.Http, id, wait: 30)).GetProperty("state").GetString());
        }

        using var history = JsonDocument.Parse(await kit.Http.GetStringAsync("/v1/devices/d2/commands?limit=3"));
        var page = history.RootElement.GetProperty("commands").EnumerateArray().Select(static c => c.GetProperty("id").GetString()!).ToArray();
        Assert.Equal(ids.AsEnumerable().Reverse().Take(3), page);
        var next = history.RootElement.GetProperty("next").GetString();
        using var rest = JsonDocument.Parse(await kit.Http.GetStringAsync($"/v1/devices/d2/commands?limit=3&after={next}"));
        Assert.Equal(ids.Take(2).Reverse(), rest.RootElement.GetProperty("commands").EnumerateArray().Select(static c => c.GetProperty("id").GetString()!));
        Assert.Equal(JsonValueKind.Null, rest.RootElement.GetProperty("next").ValueKind);
    }

    [Fact]
    public async Task A_command_nobody_takes_expires_after_its_ttl()
    {
        await using var kit = await PushTestKit.StartAsync();
        var id = await PushTestKit.PushAsync(kit.Http, "d3", "late", ttlSeconds: 1);
        var final = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
        Assert.Equal("expired", final.GetProperty("state").GetString());
        Assert.Equal(["queued", "expired"], final.GetProperty("transitions").EnumerateArray().Select(static t => t.GetProperty("state").GetString()!).ToArray());
    }

    [Fact]
    public async Task A_queued_command_can_be_canceled_once_and_is_then_never_delivered()
    {
        await using var kit = await PushTestKit.StartAsync();
        var canceled = await PushTestKit.PushAsync(kit.Http, "d1", "never");
        var kept = await PushTestKit.PushAsync(kit.Http, "d1", "kept");

        using (var response = await kit.Http.PostAsync($"/v1/commands/{canceled}/cancel", null))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        using (var again = await kit.Http.PostAsync($"/v1/commands/{canceled}/cancel", null))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
            Assert.Equal("application/problem+json", again.Content.Headers.ContentType?.MediaType);
        }

        // The device takes exactly one command: the one left; the canceled one never reaches it.
        await using var device = PushTestKit.StartDevice(kit.Server.MqttPort, "d1", count: 1);
        Assert.Equal(0, await device.WaitForExitAsync("device"));
        Assert.Equal([kept], PushTestKit.ReceivedIds(device));
        Assert.Equal("canceled", (await PushTestKit.GetAsync(kit.Http, canceled)).GetProperty("state").GetString());
        Assert.Equal("succeeded", (await PushTestKit.GetAsync(kit.Http, kept, wait: 30)).GetProperty("state").GetString());

        using var late = await kit.Http.PostAsync($"/v1/commands/{kept}/cancel", null);
        Assert.Equal(HttpStatusCode.Conflict, late.StatusCode);
    }

    [Fact]
    public async Task A_broadcast_sends_one_command_to_every_device_with_the_tag()
    {
        await using var kit = await PushTestKit.StartAsync();
        var registry = kit.Server.Services.GetRequiredService<IDeviceRegistry>();
        Assert.True(await registry.SetTagsAsync("d1", ["lobby"], CancellationToken.None));
        Assert.True(await registry.SetTagsAsync("d3", ["lobby", "floor-2"], CancellationToken.None));

        using var response = await kit.Http.PostAsync("/v1/commands/broadcast", new StringContent("{\"tag\":\"lobby\",\"name\":\"lights-off\",\"payload\":null}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var commands = body.RootElement.GetProperty("commands").EnumerateArray().ToDictionary(static c => c.GetProperty("device").GetString()!, static c => c.GetProperty("id").GetString()!);
        Assert.Equal(["d1", "d3"], commands.Keys.Order());

        await using var d1 = PushTestKit.StartDevice(kit.Server.MqttPort, "d1", count: 1);
        await using var d3 = PushTestKit.StartDevice(kit.Server.MqttPort, "d3", count: 1, version: "3");
        Assert.Equal(0, await d1.WaitForExitAsync("d1"));
        Assert.Equal(0, await d3.WaitForExitAsync("d3"));
        foreach (var (device, id) in commands)
        {
            var final = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
            Assert.Equal("succeeded", final.GetProperty("state").GetString());
            Assert.Equal(device, final.GetProperty("device").GetString());
        }
    }

    [Fact]
    public async Task A_binary_payload_travels_as_payloadBase64_and_a_duplicate_result_is_recorded_once()
    {
        await using var kit = await PushTestKit.StartAsync();
        await using var device = PushTestKit.StartDevice(kit.Server.MqttPort, "d2", count: 1);
        await device.WaitForLineAsync(static l => l == "READY", "device subscribed");
        var id = await PushTestKit.PushAsync(kit.Http, "d2", "firmware", "{\"base64\":\"AAEC/w==\"}");
        var line = await device.WaitForLineAsync(static l => l.StartsWith("CMD ", StringComparison.Ordinal), "command");
        var command = JsonDocument.Parse(line[4..]).RootElement;
        Assert.Equal("AAEC/w==", command.GetProperty("payloadBase64").GetString());
        Assert.False(command.TryGetProperty("payload", out _));
        Assert.Equal("succeeded", (await PushTestKit.GetAsync(kit.Http, id, wait: 30)).GetProperty("state").GetString());
        Assert.Equal(0, await device.WaitForExitAsync("device"));

        // The same result again (a device that answers a redelivered command): ignored, not recorded.
        var port = kit.Server.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await using var pub = ToolProcess.Start("mosquitto_pub", ["-h", "127.0.0.1", "-p", port, "-i", "d2", "-u", "d2", "-P", PushTestKit.Secret, "-q", "1", "-t", "devices/d2/results", "-m", $"{{\"id\":\"{id}\",\"status\":\"failed\"}}"], TimeSpan.FromMinutes(1));
        Assert.Equal(0, await pub.WaitForExitAsync("mosquitto_pub"));
        // Its PUBACK means the result is queued for the command loop, which handles events in order; a
        // cancel also goes through that loop, so once it answers, the duplicate has been handled.
        var marker = await PushTestKit.PushAsync(kit.Http, "d3", "marker");
        using (var cancel = await kit.Http.PostAsync($"/v1/commands/{marker}/cancel", null))
        {
            Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        }

        Assert.Equal(1, kit.Server.Services.GetRequiredService<Relay.Server.Push.Commands.PushMetrics>().DuplicateResults);
        var final = await PushTestKit.GetAsync(kit.Http, id);
        Assert.Equal("succeeded", final.GetProperty("state").GetString());
        Assert.Single(final.GetProperty("transitions").EnumerateArray(), static t => t.GetProperty("state").GetString() is "succeeded" or "failed");
    }
}
