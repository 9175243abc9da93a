using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Relay.DeviceClient;
using Relay.Server.Tests.DeviceClient.Core;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;
using Relay.Server.Twins;

namespace Relay.Server.Tests.Twins;

/// <summary>
/// Device state end to end: the back end sets desired over HTTP, a device (DeviceClient, or mosquitto_sub and
/// mosquitto_pub) gets the delta through its own session, reports, and the delta empties; versions, If-Match,
/// limits, and documents that outlive a restart.
/// </summary>
public sealed class TwinTests
{
    private static string[] Devices(params string[] extra) =>
    [
        $"Relay:Api:BootstrapToken={PushTestKit.Token}",
        "Relay:Mqtt:AllowAnonymous=false",
        "Relay:Mqtt:Devices:0:Id=d1", $"Relay:Mqtt:Devices:0:Secret={PushTestKit.Secret}",
        "Relay:Mqtt:Devices:1:Id=d2", $"Relay:Mqtt:Devices:1:Secret={PushTestKit.Secret}",
        .. extra,
    ];

    [Fact]
    public async Task DesiredSetWhileOffline_ReachesTheDeviceClientOnConnect_ItsReportEmptiesTheDelta_AndChangesFollowLive()
    {
        await using var server = await RelayTestServer.StartAsync(Devices());
        using var http = PushTestKit.Client(server.HttpPort, PushTestKit.Token);

        var set = await SendAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"interval":5,"led":"on"}""");
        Assert.Equal(1, set.GetProperty("desiredVersion").GetInt64());
        Assert.Equal("""{"interval":5,"led":"on"}""", set.GetProperty("delta").GetRawText());

        var deltas = Channel.CreateUnbounded<DesiredStateDelta>();
        var options = DeviceClientFakeServerTests.Options(new Uri($"mqtt://127.0.0.1:{server.MqttPort}"));
        await using var client = new RelayDeviceClient(options);
        client.OnDesiredState(async (delta, cancellationToken) =>
        {
            await deltas.Writer.WriteAsync(delta, cancellationToken);

            // A device applies what it can and reports it: "led" only, so "interval" stays in the delta.
            if (delta.State.TryGetProperty("led", out var led))
            {
                await client.ReportStateAsync(Encoding.UTF8.GetBytes($"{{\"led\":{led.GetRawText()}}}"), cancellationToken);
            }
        });
        await client.StartAsync();

        var first = await ReadAsync(deltas);
        Assert.Equal(1, first.Version);
        Assert.Equal("on", first.State.GetProperty("led").GetString());
        Assert.Equal(5, first.State.GetProperty("interval").GetInt32());

        await Poll.UntilAsync(async () => (await GetTwinAsync(http, "d1")).GetProperty("delta").GetRawText() == """{"interval":5}""", "the report of led to leave only interval in the delta");

        // While online, a change arrives at once, as the delta since the report.
        await SendAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"led":"off","interval":null}""");
        // The first delta may come twice (sent on connect and on subscribe: the contract is at least once).
        var second = await ReadAsync(deltas);
        while (second.Version == 1)
        {
            second = await ReadAsync(deltas);
        }

        Assert.Equal(2, second.Version);
        Assert.Equal("""{"led":"off"}""", second.State.GetRawText());
        await Poll.UntilAsync(async () => (await GetTwinAsync(http, "d1")).GetProperty("delta").GetRawText() == "{}", "the delta to empty");

        var twin = await GetTwinAsync(http, "d1");
        Assert.Equal("""{"led":"off"}""", twin.GetProperty("desired").GetRawText());
        Assert.Equal("""{"led":"off"}""", twin.GetProperty("reported").GetRawText());
        var reports = twin.GetProperty("reportedVersion").GetInt64();
        Assert.InRange(reports, 2, 3);
        Assert.Equal(reports, server.Services.GetRequiredService<TwinMetrics>().Updates(TwinDocument.Reported));
        Assert.Equal(2, server.Services.GetRequiredService<TwinMetrics>().Updates(TwinDocument.Desired));
    }

    [Fact]
    public async Task AMosquittoDevice_GetsTheDeltaWhenItSubscribes_AndItsReportIsCommittedBeforeThePuback()
    {
        await using var server = await RelayTestServer.StartAsync(Devices());
        using var http = PushTestKit.Client(server.HttpPort, PushTestKit.Token);
        await SendAsync(http, HttpMethod.Put, "/v1/devices/d2/twin/desired", """{"fan":{"speed":3,"mode":"auto"}}""");

        string[] common = ["-h", "127.0.0.1", "-p", server.MqttPort.ToString(CultureInfo.InvariantCulture), "-u", "d2", "-P", PushTestKit.Secret, "-V", "mqttv311"];
        await using (var sub = ToolProcess.Start("stdbuf", ["-oL", ExternalTool.Find("mosquitto_sub"), .. common, "-i", "d2", "-q", "1", "-C", "1", "-W", "30", "-t", "devices/d2/twin/delta"], TimeSpan.FromMinutes(1)))
        {
            var line = await sub.WaitForLineAsync(static l => l.StartsWith('{'), "the delta on mosquitto_sub");
            using var delta = JsonDocument.Parse(line);
            Assert.Equal(1, delta.RootElement.GetProperty("version").GetInt64());
            Assert.Equal("""{"fan":{"speed":3,"mode":"auto"}}""", delta.RootElement.GetProperty("state").GetRawText());
            Assert.Equal(0, await sub.WaitForExitAsync("mosquitto_sub"));
        }

        // mosquitto_pub exits after the PUBACK: the report must be committed by then, with no wait.
        await using (var pub = ToolProcess.Start("mosquitto_pub", [.. common, "-i", "d2", "-q", "1", "-t", "devices/d2/twin/reported", "-m", """{"fan":{"speed":3}}"""], TimeSpan.FromMinutes(1)))
        {
            Assert.Equal(0, await pub.WaitForExitAsync("mosquitto_pub"));
        }

        var twin = await GetTwinAsync(http, "d2");
        Assert.Equal(1, twin.GetProperty("reportedVersion").GetInt64());
        Assert.Equal("""{"fan":{"mode":"auto"}}""", twin.GetProperty("delta").GetRawText());
    }

    [Fact]
    public async Task IfMatch_WithAnotherVersion_Is412_AndChangesNothing()
    {
        await using var server = await RelayTestServer.StartAsync(Devices());
        using var http = PushTestKit.Client(server.HttpPort, PushTestKit.Token);
        using (var response = await RequestAsync(http, HttpMethod.Put, "/v1/devices/d1/twin/desired", """{"a":1}""", "\"0\""))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("\"1\"", response.Headers.ETag?.ToString());
        }

        using (var stale = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"a":2}""", "\"0\""))
        {
            Assert.Equal(HttpStatusCode.PreconditionFailed, stale.StatusCode);
            Assert.Equal("\"1\"", stale.Headers.ETag?.ToString());
        }

        using (var current = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"b":2}""", "W/\"1\""))
        {
            Assert.Equal(HttpStatusCode.OK, current.StatusCode);
        }

        using (var bad = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"b":3}""", "\"x\""))
        {
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        }

        var twin = await GetTwinAsync(http, "d1");
        Assert.Equal("""{"a":1,"b":2}""", twin.GetProperty("desired").GetRawText());
        Assert.Equal(2, twin.GetProperty("desiredVersion").GetInt64());

        using (var unknown = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/nobody/twin/desired", """{"b":3}""", null))
        {
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        }

        using var reader = PushTestKit.Client(server.HttpPort, null);
        using (var anonymous = await reader.GetAsync("/v1/devices/d1/twin"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        }
    }

    [Fact]
    public async Task Limits_AreRefusedAndCounted_ForTheApiAndForDeviceReports()
    {
        await using var server = await RelayTestServer.StartAsync(Devices("Relay:Twins:MaxDocumentBytes=200", "Relay:Twins:MaxDepth=3", "Relay:Twins:MaxKeys=4"));
        using var http = PushTestKit.Client(server.HttpPort, PushTestKit.Token);
        var metrics = server.Services.GetRequiredService<TwinMetrics>();

        using (var deep = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"a":{"b":{"c":{"d":1}}}}""", null))
        {
            Assert.Equal(HttpStatusCode.UnprocessableEntity, deep.StatusCode);
        }

        using (var big = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", "{\"a\":\"" + new string('x', 300) + "\"}", null))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, big.StatusCode);
        }

        await SendAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"a":1,"b":2,"c":3}""");
        using (var keys = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", """{"d":4,"e":5}""", null))
        {
            // Each patch fits; the document it would make does not.
            Assert.Equal(HttpStatusCode.UnprocessableEntity, keys.StatusCode);
        }

        using (var invalid = await RequestAsync(http, HttpMethod.Patch, "/v1/devices/d1/twin/desired", "[1]", null))
        {
            Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        }

        Assert.Equal(1, metrics.LimitHits(TwinLimit.Depth));
        Assert.Equal(1, metrics.LimitHits(TwinLimit.DocumentBytes));
        Assert.Equal(1, metrics.LimitHits(TwinLimit.Keys));

        // A device's report over a limit is acknowledged (sending it again would not help), dropped and counted.
        string[] common = ["-h", "127.0.0.1", "-p", server.MqttPort.ToString(CultureInfo.InvariantCulture), "-u", "d1", "-P", PushTestKit.Secret, "-i", "d1", "-q", "1", "-t", "devices/d1/twin/reported"];
        await using (var pub = ToolProcess.Start("mosquitto_pub", [.. common, "-m", """{"a":{"b":{"c":{"d":1}}}}"""], TimeSpan.FromMinutes(1)))
        {
            Assert.Equal(0, await pub.WaitForExitAsync("mosquitto_pub"));
        }

        await using (var pub = ToolProcess.Start("mosquitto_pub", [.. common, "-m", "not json"], TimeSpan.FromMinutes(1)))
        {
            Assert.Equal(0, await pub.WaitForExitAsync("mosquitto_pub"));
        }

        Assert.Equal(2, metrics.LimitHits(TwinLimit.Depth));
        Assert.Equal(1, metrics.Drops(TwinReportDrop.Limit));
        Assert.Equal(1, metrics.Drops(TwinReportDrop.Invalid));
        Assert.Equal(0, (await GetTwinAsync(http, "d1")).GetProperty("reportedVersion").GetInt64());
    }

    [Fact]
    public async Task BothDocuments_SurviveKill9_AndTheDeltaIsSentAfterTheRestart()
    {
        const string token = "twin-durability-token-0123456789";
        await using var broker = await RelayBroker.StartAsync([$"--Relay:Api:BootstrapToken={token}"]);
        using (var http = PushTestKit.Client(broker.HttpPort, token))
        {
            await SendAsync(http, HttpMethod.Put, "/v1/devices/d1/twin/desired", """{"interval":10,"led":"on"}""");
        }

        string[] common = ["-h", "127.0.0.1", "-p", broker.TcpPort.ToString(CultureInfo.InvariantCulture), "-u", "d1", "-P", MqttBroker.Secret("d1"), "-i", "d1", "-V", "mqttv5"];
        await using (var pub = ToolProcess.Start("mosquitto_pub", [.. common, "-q", "1", "-t", "devices/d1/twin/reported", "-m", """{"led":"on","battery":97}"""], TimeSpan.FromMinutes(1)))
        {
            Assert.Equal(0, await pub.WaitForExitAsync("mosquitto_pub"));
        }

        // Acknowledged means committed: SIGKILL right after the PUBACK loses nothing.
        await broker.KillAsync();
        await broker.RestartAsync();
        using (var http = PushTestKit.Client(broker.HttpPort, token))
        {
            var twin = await GetTwinAsync(http, "d1");
            Assert.Equal("""{"interval":10,"led":"on"}""", twin.GetProperty("desired").GetRawText());
            Assert.Equal("""{"led":"on","battery":97}""", twin.GetProperty("reported").GetRawText());
            Assert.Equal(1, twin.GetProperty("desiredVersion").GetInt64());
            Assert.Equal(1, twin.GetProperty("reportedVersion").GetInt64());
            Assert.Equal("""{"interval":10}""", twin.GetProperty("delta").GetRawText());
        }

        await using var sub = ToolProcess.Start("stdbuf", ["-oL", ExternalTool.Find("mosquitto_sub"), .. common, "-q", "1", "-C", "1", "-W", "30", "-t", "devices/d1/twin/delta"], TimeSpan.FromMinutes(1));
        var line = await sub.WaitForLineAsync(static l => l.StartsWith('{'), "the delta after the restart");
        Assert.Equal("""{"version":1,"state":{"interval":10}}""", line);
    }

    private static async Task<DesiredStateDelta> ReadAsync(Channel<DesiredStateDelta> deltas)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        return await deltas.Reader.ReadAsync(timeout.Token);
    }

    private static async Task<JsonElement> GetTwinAsync(HttpClient http, string device)
    {
        using var response = await http.GetAsync($"/v1/devices/{device}/twin");
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    private static async Task<JsonElement> SendAsync(HttpClient http, HttpMethod method, string path, string body)
    {
        using var response = await RequestAsync(http, method, path, body, null);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    private static async Task<HttpResponseMessage> RequestAsync(HttpClient http, HttpMethod method, string path, string body, string? ifMatch)
    {
        using var request = new HttpRequestMessage(method, path) { Content = new StringContent(body, Encoding.UTF8, "application/merge-patch+json") };
        if (ifMatch is not null)
        {
            request.Headers.TryAddWithoutValidation("If-Match", ifMatch);
        }

        return await http.SendAsync(request);
    }
}
