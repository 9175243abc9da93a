using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's L6 (MQTT part): before CONNECT a stranger may only send a small packet
/// (Relay:Mqtt:MaxPreConnectPacketBytes), refused on its declared length before anything is buffered; and the
/// CONNECT deadline (Relay:Mqtt:ConnectTimeoutSeconds) holds while credentials are being verified.
/// </summary>
public sealed class PreConnectTests
{
    [Fact]
    public async Task APacketBeforeConnect_DeclaringMoreThanTheLimit_IsClosedOnItsHeader()
    {
        // A long CONNECT timeout: only the size check may close this connection.
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxPreConnectPacketBytes=4096", "Relay:Mqtt:ConnectTimeoutSeconds=60");
        var metrics = server.MqttMetrics();

        var stranger = await MqttTestClient.OpenAsync(server.MqttPort);
        await using (stranger)
        {
            // CONNECT whose Remaining Length says 100,000 (well under MaxPacketSize, 256 KiB), then nothing.
            await stranger.SendRawAsync(new byte[] { 0x10, 0xA0, 0x8D, 0x06 });
            Assert.Empty(await stranger.ReadUntilClosedAsync());
        }

        Assert.Equal(1, metrics.LimitHits(MqttLimit.PreConnectPacketSize));
        Assert.Equal(0, metrics.LimitHits(MqttLimit.ConnectTimeout));
        Assert.Equal(0, metrics.LimitHits(MqttLimit.PacketSize));

        // After CONNECT the full MaxPacketSize applies: a 100 KB PUBLISH goes through.
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "big");
        await using var c = client;
        await client.PublishAsync("lab/big", new string('x', 100_000), qos: 1, packetId: 1);
        Assert.Equal(MqttReasonCode.Success, (await client.ReceiveAsync()).Ack().ReasonCode);
    }

    [Fact]
    public async Task TheConnectDeadline_HoldsWhileCredentialsAreVerified()
    {
        // An authentication hook that never answers, with a per-attempt timeout far beyond the deadline:
        // only the CONNECT deadline (5 s: the CONNECT reaches the hook well before it, even on a loaded machine;
        // the client's read gives up after 15 s) can end this connection in the test's time.
        await using var hook = await HangingHook.StartAsync();
        await using var server = await EngineTestServer.StartAsync(
            "Relay:Mqtt:AllowAnonymous=false",
            "Relay:Mqtt:ConnectTimeoutSeconds=5",
            $"Relay:Mqtt:AuthHook:Url={hook.Url}",
            "Relay:Mqtt:AuthHook:TimeoutMilliseconds=120000",
            "Relay:Mqtt:AuthHook:Retries=0",
            "Relay:Mqtt:AuthHook:FallbackOnly=false");
        var metrics = server.MqttMetrics();

        var client = await MqttTestClient.OpenAsync(server.MqttPort);
        await using (client)
        {
            var connect = new MqttConnectOptions { Version = MqttProtocolVersion.V500, ClientId = "slow", CleanStart = true, KeepAliveSeconds = 60, Username = "someone", Password = Encoding.UTF8.GetBytes("secret"), HasPassword = true };
            await client.SendAsync(w => MqttPacketWriter.WriteConnect(w, connect));

            // Closed at the deadline, without a CONNACK, although the hook has not answered.
            Assert.Empty(await client.ReadUntilClosedAsync());
            await Poll.UntilAsync(() => metrics.Ends(MqttEndReason.ConnectTimeout) == 1, "the end to be counted as a CONNECT timeout");
        }

        Assert.Equal(1, hook.Calls);
        await Poll.UntilAsync(() => hook.Aborted == 1, "the hook call to be abandoned at the deadline");
        Assert.Equal(0, metrics.ClientsConnected);
    }

    private sealed class HangingHook : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private int _calls;
        private int _aborted;

        private HangingHook(WebApplication app) => _app = app;

        public string Url { get; private set; } = string.Empty;

        public int Calls => Volatile.Read(ref _calls);

        public int Aborted => Volatile.Read(ref _aborted);

        public static async Task<HangingHook> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
            var app = builder.Build();
            var hook = new HangingHook(app);
            app.MapPost("/auth", async (HttpContext context) =>
            {
                Interlocked.Increment(ref hook._calls);
                await Task.Delay(Timeout.Infinite, context.RequestAborted).ContinueWith(static _ => { }, TaskScheduler.Default);
                Interlocked.Increment(ref hook._aborted);
                return Results.StatusCode(200);
            });
            await app.StartAsync();
            hook.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single() + "/auth";
            return hook;
        }

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }
}
