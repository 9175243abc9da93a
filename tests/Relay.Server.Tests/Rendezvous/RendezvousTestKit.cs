using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Mqtt;
using Relay.Protocol.Rendezvous;
using Relay.Server.Tests.Mqtt.Engine;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.RendezvousServer;

/// <summary>The real server in-process with devices d1..d3 (secret <see cref="PushTestKit.Secret"/>), a fake clock (its timers, the sweeps included, fire only when the test advances it) and an admin HTTP client.</summary>
internal sealed class RendezvousTestKit : IAsyncDisposable
{
    private RendezvousTestKit(RelayTestServer server, FakeTimeProvider clock)
    {
        Server = server;
        Clock = clock;
        Http = PushTestKit.Client(server.HttpPort, PushTestKit.Token);
    }

    public RelayTestServer Server { get; }

    public FakeTimeProvider Clock { get; }

    public HttpClient Http { get; }

    public static async Task<RendezvousTestKit> StartAsync(params string[] settings)
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var server = await RelayTestServer.StartAsync(
            services => services.AddSingleton<TimeProvider>(clock),
            [
                $"Relay:Api:BootstrapToken={PushTestKit.Token}",
                "Relay:Mqtt:AllowAnonymous=false",
                "Relay:Mqtt:Devices:0:Id=d1", $"Relay:Mqtt:Devices:0:Secret={PushTestKit.Secret}",
                "Relay:Mqtt:Devices:1:Id=d2", $"Relay:Mqtt:Devices:1:Secret={PushTestKit.Secret}",
                "Relay:Mqtt:Devices:2:Id=d3", $"Relay:Mqtt:Devices:2:Secret={PushTestKit.Secret}",
                .. settings,
            ]);
        return new RendezvousTestKit(server, clock);
    }

    /// <summary>PUT /v1/devices/{id}/tags.</summary>
    public async Task TagAsync(string device, params string[] tags)
    {
        using var response = await Http.PutAsJsonAsync($"/v1/devices/{device}/tags", new { tags });
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
    }

    public Task<RendezvousDevice> ConnectAsync(string id, bool subscribe = true) => RendezvousDevice.ConnectAsync(Server.MqttPort, id, subscribe);

    public async Task<string> MetricsAsync() => await Http.GetStringAsync("/metrics");

    /// <summary>The value of one sample line of /metrics (0 when absent).</summary>
    public async Task<double> MetricAsync(string sample)
    {
        foreach (var line in (await MetricsAsync()).Split('\n'))
        {
            if (line.StartsWith(sample + " ", StringComparison.Ordinal))
            {
                return double.Parse(line[(sample.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }
}

/// <summary>A device on a real MQTT 3.1.1 connection speaking the rendezvous contract, the way DeviceClient will.</summary>
internal sealed class RendezvousDevice : IAsyncDisposable
{
    private readonly MqttTestClient _client;

    private RendezvousDevice(MqttTestClient client, string id)
    {
        _client = client;
        Id = id;
    }

    public string Id { get; }

    public static async Task<RendezvousDevice> ConnectAsync(int port, string id, bool subscribe)
    {
        var (client, _) = await MqttTestClient.ConnectAsync(port, id, MqttProtocolVersion.V311, o =>
        {
            o.Options.Username = id;
            o.Options.Password = Encoding.UTF8.GetBytes(PushTestKit.Secret);
            o.Options.HasPassword = true;
        });
        if (subscribe)
        {
            Assert.Equal([1], await client.SubscribeAndWaitAsync($"devices/{id}/rendezvous/in", 1));
        }

        return new RendezvousDevice(client, id);
    }

    public Task SendAsync(RendezvousMessage message) =>
        SendRawAsync(JsonSerializer.SerializeToUtf8Bytes(message, RendezvousJsonContext.Default.RendezvousMessage));

    public Task SendRawAsync(string payload) => SendRawAsync(Encoding.UTF8.GetBytes(payload));

    public Task SendRawAsync(byte[] payload) =>
        _client.PublishAsync(Encoding.UTF8.GetBytes($"devices/{Id}/rendezvous/out"), payload, qos: 1);

    /// <summary>The next message on this device's rendezvous/in topic (PUBACKed); fails after the client's bound.</summary>
    public async Task<RendezvousMessage> ReceiveAsync()
    {
        while (true)
        {
            var packet = await _client.ReceiveAsync();
            if (packet.Type != MqttPacketType.Publish)
            {
                continue;
            }

            var publish = packet.Publish();
            Assert.Equal($"devices/{Id}/rendezvous/in", packet.Topic);
            Assert.Equal(1, publish.QoS);
            await _client.AckAsync(MqttPacketType.PubAck, publish.PacketId);
            var message = JsonSerializer.Deserialize(packet.PayloadText, RendezvousJsonContext.Default.RendezvousMessage);
            Assert.NotNull(message);
            return message;
        }
    }

    /// <summary>The next message, asserting it is an <c>error</c> with <paramref name="code"/>.</summary>
    public async Task<RendezvousMessage> ReceiveErrorAsync(string code)
    {
        var message = await ReceiveAsync();
        Assert.True(message.Type == RendezvousMessageTypes.Error && message.Code == code, $"expected error {code}, got {message}");
        return message;
    }

    /// <summary>A PINGREQ barrier: asserts nothing was published to this device before the PINGRESP.</summary>
    public async Task AssertNothingReceivedAsync()
    {
        var packets = await _client.DrainUntilPingAsync();
        Assert.DoesNotContain(packets, static p => p.Type == MqttPacketType.Publish);
    }

    public async ValueTask DisposeAsync() => await _client.DisposeAsync();

    public static string NewSessionId() => Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));

    public static RendezvousCandidate[] Candidates(string address, int port) =>
        [new("host", address, port, 2130706431), new("srflx", "203.0.113.7", port + 1, 1694498815), new("relay", "203.0.113.1", 61000, 16777215)];

    public static RendezvousMessage Connect(string sessionId, string peer, string nat = "PortRestricted") => new()
    {
        Type = RendezvousMessageTypes.Connect,
        SessionId = sessionId,
        Peer = peer,
        Candidates = Candidates("10.0.1.2", 40000),
        Nat = nat,
    };
}
