using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Devices;
using Relay.Server.Push;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>An in-process server with three devices (d1..d3), an admin token and an HTTP client for the push API.</summary>
internal sealed class PushTestKit : IAsyncDisposable
{
    public const string Token = "push-test-token-0123456789";
    public const string Secret = "device-secret-1";

    private PushTestKit(RelayTestServer server, RecordingSink sink)
    {
        Server = server;
        Sink = sink;
        Http = Client(server.HttpPort, Token);
    }

    public RelayTestServer Server { get; }

    public RecordingSink Sink { get; }

    public HttpClient Http { get; }

    public static async Task<PushTestKit> StartAsync(params string[] settings)
    {
        var sink = new RecordingSink();
        var server = await RelayTestServer.StartAsync(
            services => services.AddSingleton<IPushEventSink>(sink),
            [
                $"Relay:Api:BootstrapToken={Token}",
                "Relay:Mqtt:AllowAnonymous=false",
                "Relay:Mqtt:Devices:0:Id=d1", $"Relay:Mqtt:Devices:0:Secret={Secret}",
                "Relay:Mqtt:Devices:1:Id=d2", $"Relay:Mqtt:Devices:1:Secret={Secret}",
                "Relay:Mqtt:Devices:2:Id=d3", $"Relay:Mqtt:Devices:2:Secret={Secret}",
                .. settings,
            ]);
        return new PushTestKit(server, sink);
    }

    public static HttpClient Client(int port, string? token)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}"), Timeout = TimeSpan.FromSeconds(90) };
        if (token is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return http;
    }

    /// <summary>POST /v1/devices/{device}/commands; asserts 202 and returns the id.</summary>
    public static async Task<string> PushAsync(HttpClient http, string device, string name, string payloadJson = "{\"on\":true}", int? ttlSeconds = null)
    {
        var body = $"{{\"name\":\"{name}\",\"payload\":{payloadJson}{(ttlSeconds is { } t ? $",\"ttlSeconds\":{t}" : string.Empty)}}}";
        using var response = await http.PostAsync($"/v1/devices/{device}/commands", new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Accepted, $"{(int)response.StatusCode}: {text}");
        using var document = JsonDocument.Parse(text);
        Assert.Equal("queued", document.RootElement.GetProperty("state").GetString());
        return document.RootElement.GetProperty("id").GetString()!;
    }

    /// <summary>GET /v1/commands/{id}[?wait=N] as a parsed document.</summary>
    public static async Task<JsonElement> GetAsync(HttpClient http, string id, int wait = 0)
    {
        using var response = await http.GetAsync($"/v1/commands/{id}" + (wait > 0 ? $"?wait={wait}" : string.Empty));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {text}");
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    /// <summary>Starts the paho device of scripts/command_device.py.</summary>
    public static ToolProcess StartDevice(int port, string device, int count, string version = "5", string status = "succeeded") =>
        ToolProcess.Start("/usr/bin/python3", [DeviceScript, "--port", port.ToString(CultureInfo.InvariantCulture), "--id", device, "--secret", Secret, "--version", version, "--count", count.ToString(CultureInfo.InvariantCulture), "--status", status], TimeSpan.FromMinutes(2));

    public static string DeviceScript => Path.Combine(RepoPaths.Root, "tests", "Relay.Server.Tests", "Push", "Commands", "scripts", "command_device.py");

    /// <summary>The command ids a device printed (CMD lines), in arrival order.</summary>
    public static List<string> ReceivedIds(ToolProcess device) =>
        [.. device.StdoutLines.Where(static l => l.StartsWith("CMD ", StringComparison.Ordinal)).Select(static l => JsonDocument.Parse(l[4..]).RootElement.GetProperty("id").GetString()!)];

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }
}
