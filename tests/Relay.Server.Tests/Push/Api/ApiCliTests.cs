using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Cli;

namespace Relay.Server.Tests.Push.Api;

public sealed class ApiCliTests
{
    private static async Task<(int Code, string Out, string Err)> Run(Func<string, string?>? environment, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var code = await ApiCli.RunAsync(["api", .. args], output, error, environment ?? (_ => null));
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task DevicesAdd_List_TokenCreate_AgainstTheServer()
    {
        await using var server = await DeviceApiTests.StartAsync();
        var url = $"http://127.0.0.1:{server.HttpPort}";
        string? Env(string name) => name == ApiCli.TokenVariable ? DeviceApiTests.Admin : null;

        var (code, output, error) = await Run(Env, "devices", "add", "pump-7", "--tag", "lab", "--tag=roof", "--server", url);
        Assert.True(code == 0, error);
        var secret = output.Split("secret (shown once): ")[1].Split('\n')[0].Trim();
        Assert.Equal(SecretCheck.Match, await server.Services.GetRequiredService<IDeviceRegistry>().VerifySecretAsync("pump-7", Encoding.UTF8.GetBytes(secret), CancellationToken.None));

        (code, _, error) = await Run(Env, "devices", "add", "pump-7", "--server", url);
        Assert.Equal(1, code);
        Assert.Contains("already registered", error, StringComparison.Ordinal);

        (code, output, error) = await Run(Env, "token", "create", "--scope", "read", "--name", "dashboard", "--server", url);
        Assert.True(code == 0, error);
        var readToken = output.Trim().Split('\n')[^1].Trim();

        // --token wins over RELAY_TOKEN; a read token may list.
        (code, output, error) = await Run(Env, "devices", "list", "--token", readToken, "--server", url, "--tag", "roof");
        Assert.True(code == 0, error);
        Assert.Contains("pump-7\toffline\tnever\t-\t-\t-\tlab,roof", output, StringComparison.Ordinal);

        // ... but not provision.
        (code, _, error) = await Run(null, "devices", "add", "x", "--token", readToken, "--server", url);
        Assert.Equal(4, code);
        Assert.Contains("403", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BadToken_Unreachable_NoToken_AndMissingCommandEndpoint_GiveClearErrors()
    {
        await using var server = await DeviceApiTests.StartAsync();
        var url = $"http://127.0.0.1:{server.HttpPort}";

        var (code, _, error) = await Run(null, "devices", "list", "--server", url, "--token", "wrong");
        Assert.Equal(4, code);
        Assert.Contains("did not accept the token", error, StringComparison.Ordinal);

        (code, _, error) = await Run(null, "devices", "list", "--server", url);
        Assert.Equal(4, code);
        Assert.Contains(ApiCli.TokenVariable, error, StringComparison.Ordinal);

        // A port nobody listens on (taken from the tests' port counter, never bound).
        (code, _, error) = await Run(null, "devices", "list", "--server", $"http://127.0.0.1:{FreePorts.Tcp()}", "--token", "t");
        Assert.Equal(3, code);
        Assert.Contains("cannot reach the server", error, StringComparison.Ordinal);

        (code, _, error) = await Run(null, "devices", "frobnicate", "--server", url, "--token", "t");
        Assert.Equal(2, code);
        Assert.Contains("usage:", error, StringComparison.Ordinal);

        // The real command endpoint answers 404 for a device nobody registered; the CLI says which.
        (code, _, error) = await Run(null, "push", "pump-7", "blink", "--server", url, "--token", DeviceApiTests.Admin);
        Assert.Equal(1, code);
        Assert.Contains("pump-7", error, StringComparison.Ordinal);
        Assert.DoesNotContain("endpoint", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Push_AgainstTheRealServer_ToAPahoDevice_PrintsTheFinalStateAndResult()
    {
        await using var kit = await Relay.Server.Tests.Push.Commands.PushTestKit.StartAsync();
        var url = $"http://127.0.0.1:{kit.Server.HttpPort}";
        await using var device = Relay.Server.Tests.Push.Commands.PushTestKit.StartDevice(kit.Server.MqttPort, "d1", count: 1);
        await device.WaitForLineAsync(static l => l == "READY", "the device subscribed");

        var (code, output, error) = await Run(null, "push", "d1", "blink", "{\"times\":3}", "--wait", "30", "--server", url, "--token", Relay.Server.Tests.Push.Commands.PushTestKit.Token);

        Assert.True(code == 0, $"exit {code}\n{output}\n{error}");
        Assert.Contains("succeeded", output, StringComparison.Ordinal);
        Assert.Contains("blink", output, StringComparison.Ordinal);

        // The transitions are on /metrics, with the MQTT identity families (auth hook, ACL) beside them.
        var metrics = await kit.Http.GetStringAsync("/metrics");
        Assert.Contains("relay_push_command_transitions_total{state=\"succeeded\"} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("relay_push_command_transitions_total{state=\"delivered\"} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_acl_denials_total", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Push_Waits_ForTheFinalState_AndReportsUnknownDevices()
    {
        // A stand-in for the command endpoints with the shapes documented in issue 5 (202 {id}; GET
        // /v1/commands/{id}?wait=N -> {state, result}); the real ones come from the command lifecycle.
        string? posted = null;
        string? waited = null;
        await using var fake = await FakeCommandServer.StartAsync(app =>
        {
            app.MapPost("/v1/devices/{id}/commands", async (HttpContext http, string id) =>
            {
                if (id != "pump-7")
                {
                    return Results.Problem(statusCode: 404, detail: $"No device '{id}'.");
                }

                posted = await new StreamReader(http.Request.Body).ReadToEndAsync();
                return Results.Json(new Dictionary<string, string> { ["id"] = "c-1" }, statusCode: 202);
            });
            app.MapGet("/v1/commands/{id}", (HttpContext http, string id) =>
            {
                waited = http.Request.Query["wait"];
                return Results.Text("""{"id":"c-1","state":"succeeded","result":{"blinked":3}}""", "application/json");
            });
        });

        var (code, output, error) = await Run(null, "push", "pump-7", "blink", """{"times":3}""", "--wait", "30", "--ttl", "60", "--server", fake.Url, "--token", "t");
        Assert.True(code == 0, error);
        Assert.Contains("command c-1: succeeded {\"blinked\":3}", output, StringComparison.Ordinal);
        Assert.Equal("30", waited);
        var body = JsonDocument.Parse(posted!).RootElement;
        Assert.Equal("blink", body.GetProperty("name").GetString());
        Assert.Equal(3, body.GetProperty("payload").GetProperty("times").GetInt32());
        Assert.Equal(60, body.GetProperty("ttlSeconds").GetInt32());

        (code, _, error) = await Run(null, "push", "nobody", "blink", "--server", fake.Url, "--token", "t");
        Assert.Equal(1, code);
        Assert.Contains("unknown device 'nobody'", error, StringComparison.Ordinal);

        (code, _, error) = await Run(null, "push", "pump-7", "blink", "{not json", "--server", fake.Url, "--token", "t");
        Assert.Equal(2, code);
        Assert.Contains("payload must be JSON", error, StringComparison.Ordinal);
    }

    private sealed class FakeCommandServer : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private FakeCommandServer(WebApplication app, string url)
        {
            _app = app;
            Url = url;
        }

        public string Url { get; }

        public static async Task<FakeCommandServer> StartAsync(Action<WebApplication> map)
        {
            var port = FreePorts.Tcp();
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.Services.AddProblemDetails();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
            var app = builder.Build();
            map(app);
            await app.StartAsync();
            return new FakeCommandServer(app, $"http://127.0.0.1:{port}");
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
