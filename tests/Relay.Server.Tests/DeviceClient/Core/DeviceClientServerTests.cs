using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Relay.DeviceClient;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Push;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>Sees every PUBLISH the server accepted, so tests count what the device really sent.</summary>
internal sealed class PublishRecorder : IMqttMessageObserver
{
    private readonly Lock _gate = new();
    private readonly List<(string Topic, string Payload)> _messages = [];
    private readonly List<(int Count, TaskCompletionSource Done)> _waiters = [];

    public List<(string Topic, string Payload)> Messages
    {
        get
        {
            lock (_gate)
            {
                return [.. _messages];
            }
        }
    }

    public Task WaitForCountAsync(int count)
    {
        lock (_gate)
        {
            if (_messages.Count >= count)
            {
                return Task.CompletedTask;
            }

            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((count, done));
            return done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    public void OnClientConnected(string clientId, byte protocolVersion, IPEndPoint? remoteEndPoint, DateTimeOffset at)
    {
    }

    public void OnClientDisconnected(string clientId, DateTimeOffset at)
    {
    }

    public void OnSubscribed(string clientId, string filter)
    {
    }

    public ValueTask<bool> OnMessageReceived(string clientId, StoredMessage message)
    {
        if (message.Topic.Contains("/telemetry/", StringComparison.Ordinal))
        {
            lock (_gate)
            {
                _messages.Add((message.Topic, Encoding.UTF8.GetString(message.Payload.Span)));
                foreach (var w in _waiters.Where(w => _messages.Count >= w.Count).ToList())
                {
                    _waiters.Remove(w);
                    w.Done.TrySetResult();
                }
            }
        }

        return ValueTask.FromResult(true);
    }

    public void OnMessageDelivered(string clientId, string topic, object? tag)
    {
    }
}

/// <summary>DeviceClient against the real in-process server (TCP, TLS with a client certificate, WebSocket).</summary>
public sealed class DeviceClientServerTests
{
    private static string[] Devices(params string[] extra) =>
    [
        $"Relay:Api:BootstrapToken={PushTestKit.Token}",
        "Relay:Mqtt:AllowAnonymous=false",
        "Relay:Mqtt:Devices:0:Id=d1", $"Relay:Mqtt:Devices:0:Secret={PushTestKit.Secret}",
        .. extra,
    ];

    private static DeviceClientOptions Options(Uri server)
    {
        var options = DeviceClientFakeServerTests.Options(server);
        options.Reconnect.BaseDelay = TimeSpan.FromMilliseconds(50);
        options.Reconnect.MaxDelay = TimeSpan.FromMilliseconds(200);
        options.Random = null;
        return options;
    }

    [Fact]
    public async Task CommandsQueuedWhileTheDeviceWasOffline_RunOnce_AfterTheServerRestarts()
    {
        var dataDirectory = Directory.CreateTempSubdirectory("relay-dc-restart-").FullName;
        var mqttPort = FreePorts.Tcp();
        var httpPort = FreePorts.Tcp();
        string[] settings = Devices($"Relay:DataDirectory={dataDirectory}", $"Relay:Mqtt:Port={mqttPort}", $"Relay:Http:Port={httpPort}");
        try
        {
            var ids = new List<string>();
            await using (var first = await RelayTestServer.StartAsync(settings))
            {
                using var http = PushTestKit.Client(httpPort, PushTestKit.Token);
                for (var i = 0; i < 5; i++)
                {
                    ids.Add(await PushTestKit.PushAsync(http, "d1", "blink", $"{{\"n\":{i}}}"));
                }
            }

            // The server is down now: the device starts and keeps trying.
            var options = Options(new Uri($"mqtt://127.0.0.1:{mqttPort}"));
            await using var client = new RelayDeviceClient(options);
            var runs = new ConcurrentDictionary<string, int>();
            client.OnCommand("blink", (command, _) =>
            {
                runs.AddOrUpdate(command.Id, 1, static (_, n) => n + 1);
                return Task.FromResult(CommandResult.Success(new System.Text.Json.Nodes.JsonObject { ["n"] = command.Payload.GetProperty("n").GetInt32() }));
            });
            var failures = 0;
            client.Error += (_, _) => Interlocked.Increment(ref failures);
            await client.StartAsync();

            // Same ports, same data directory: the queued commands survived the restart.
            await using var second = await RelayTestServer.StartAsync(settings);
            await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
            using var api = PushTestKit.Client(httpPort, PushTestKit.Token);
            for (var i = 0; i < ids.Count; i++)
            {
                var status = await PushTestKit.GetAsync(api, ids[i], wait: 30);
                Assert.Equal("succeeded", status.GetProperty("state").GetString());
                Assert.Equal(i, status.GetProperty("result").GetProperty("n").GetInt32());
            }

            Assert.Equal(ids.Order(), runs.Keys.Order());
            Assert.All(runs.Values, n => Assert.Equal(1, n));
            Assert.True(Volatile.Read(ref failures) >= 1, "the client saw the server down at least once");
            await client.StopAsync();
            Assert.Equal(DeviceConnectionState.Stopped, client.State);
        }
        finally
        {
            Directory.Delete(dataDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task ExpiredCommand_CancelsItsHandler_AndReportsExpired()
    {
        await using var kit = await PushTestKit.StartAsync();
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = Options(new Uri($"mqtt://127.0.0.1:{kit.Server.MqttPort}"));
        options.TimeProvider = clock;
        await using var client = new RelayDeviceClient(options);
        var started = new TaskCompletionSource<DeviceCommand>(TaskCreationOptions.RunContinuationsAsynchronously);
        var observedCancellation = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        client.OnCommand("wait", async (command, token) =>
        {
            started.TrySetResult(command);
            try
            {
                await Task.Delay(Timeout.Infinite, token);
            }
            catch (OperationCanceledException)
            {
                observedCancellation.TrySetResult();
                throw;
            }

            return CommandResult.Success();
        });
        await client.StartAsync();
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));

        var id = await PushTestKit.PushAsync(kit.Http, "d1", "wait", ttlSeconds: 600);
        var command = await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.NotNull(command.ExpiresAt);

        // Past expiresAt on the client's clock: the handler's token is canceled.
        clock.Advance(command.ExpiresAt.Value - clock.GetUtcNow() + TimeSpan.FromSeconds(1));
        await observedCancellation.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var status = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
        Assert.Equal("failed", status.GetProperty("state").GetString());
        Assert.Equal("expired", status.GetProperty("result").GetProperty("error").GetString());
    }

    [Fact]
    public async Task OfflineQueue_DrainsAtTheConfiguredRate_OnTheTimeProvider()
    {
        var recorder = new PublishRecorder();
        await using var server = await RelayTestServer.StartAsync(s => s.AddSingleton<IMqttMessageObserver>(recorder), Devices());
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UtcNow);
        var options = Options(new Uri($"mqtt://127.0.0.1:{server.MqttPort}"));
        options.TimeProvider = clock;
        options.OfflineQueue.DrainRatePerSecond = 2;
        await using var client = new RelayDeviceClient(options);
        const int Count = 6;
        for (var i = 0; i < Count; i++)
        {
            await client.PublishTelemetryAsync("temp", Encoding.UTF8.GetBytes($"{{\"i\":{i}}}"));
        }

        Assert.Equal(Count, client.Statistics.QueuedMessages);
        await client.StartAsync();

        // Rate 2/s with a one-token bucket: after fake time t, at most 2t + 1 messages have left.
        var interval = TimeSpan.FromSeconds(0.5);
        for (var sent = 1; sent < Count; sent++)
        {
            await recorder.WaitForCountAsync(sent);
            await clock.WaitForTimerAsync(due => due == interval);
            Assert.Equal(sent, recorder.Messages.Count);
            clock.Advance(interval);
        }

        await recorder.WaitForCountAsync(Count);
        Assert.Equal(Enumerable.Range(0, Count).Select(i => $"{{\"i\":{i}}}"), recorder.Messages.Select(m => m.Payload));
        Assert.All(recorder.Messages, m => Assert.Equal("devices/d1/telemetry/temp", m.Topic));
    }

    [Theory]
    [InlineData(OfflineQueueDropPolicy.DropOldest, new[] { 2, 3, 4 })]
    [InlineData(OfflineQueueDropPolicy.DropNewest, new[] { 0, 1, 2 })]
    public async Task OfflineQueue_WhenFull_DropsPerPolicy_AndCounts(OfflineQueueDropPolicy policy, int[] kept)
    {
        var recorder = new PublishRecorder();
        await using var server = await RelayTestServer.StartAsync(s => s.AddSingleton<IMqttMessageObserver>(recorder), Devices());
        var options = Options(new Uri($"mqtt://127.0.0.1:{server.MqttPort}"));
        options.OfflineQueue.Capacity = 3;
        options.OfflineQueue.DropPolicy = policy;
        options.OfflineQueue.DrainRatePerSecond = 0;
        await using var client = new RelayDeviceClient(options);
        for (var i = 0; i < 5; i++)
        {
            await client.PublishTelemetryAsync("n", Encoding.UTF8.GetBytes(i.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }

        Assert.Equal(2, client.Statistics.DroppedMessages);
        Assert.Equal(3, client.Statistics.QueuedMessages);
        await client.StartAsync();
        await recorder.WaitForCountAsync(3);

        // One message after the queue drained goes straight out, so nothing else was still coming.
        await client.PublishTelemetryAsync("n", "9"u8.ToArray());
        await recorder.WaitForCountAsync(4);
        Assert.Equal([.. kept.Select(k => k.ToString(System.Globalization.CultureInfo.InvariantCulture)), "9"], recorder.Messages.Select(m => m.Payload));
    }

    [Fact]
    public async Task OfflineQueue_FilePath_SurvivesARestartOfTheClient()
    {
        var recorder = new PublishRecorder();
        await using var server = await RelayTestServer.StartAsync(s => s.AddSingleton<IMqttMessageObserver>(recorder), Devices());
        var directory = Directory.CreateTempSubdirectory("relay-dc-queue-").FullName;
        try
        {
            var path = Path.Combine(directory, "queue.journal");
            var options = Options(new Uri($"mqtt://127.0.0.1:{server.MqttPort}"));
            options.OfflineQueue.FilePath = path;
            options.OfflineQueue.DrainRatePerSecond = 0;
            await using (var offline = new RelayDeviceClient(options))
            {
                for (var i = 0; i < 4; i++)
                {
                    await offline.PublishTelemetryAsync("t", Encoding.UTF8.GetBytes($"m{i}"));
                }

                // Never started: the process "ends" with the messages only in the journal.
            }

            var again = Options(new Uri($"mqtt://127.0.0.1:{server.MqttPort}"));
            again.OfflineQueue.FilePath = path;
            again.OfflineQueue.DrainRatePerSecond = 0;
            await using var client = new RelayDeviceClient(again);
            await client.StartAsync();
            await recorder.WaitForCountAsync(4);
            Assert.Equal(["m0", "m1", "m2", "m3"], recorder.Messages.Select(m => m.Payload));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Tls_WithAClientCertificate_ConnectsAndReceivesACommand()
    {
        var directory = Directory.CreateTempSubdirectory("relay-dc-tls-").FullName;
        try
        {
            // A real chain: the server's certificate comes from a test CA the client is told to trust, so the
            // client's certificate validation runs for real instead of being switched off.
            var pki = TestPki.Create(directory);
            var (caPath, device) = TestDeviceCa.Create(Directory.CreateDirectory(Path.Combine(directory, "devices")).FullName, "d1");
            using var deviceCertificate = device;
            using var serverCa = X509Certificate2.CreateFromPem(File.ReadAllText(pki.CaPath));

            await using var kit = await PushTestKit.StartAsync(
                $"Relay:Tls:CertificatePath={pki.CertificatePath}",
                $"Relay:Tls:KeyPath={pki.KeyPath}",
                "Relay:Mqtt:ClientCertificateMode=Optional",
                $"Relay:Mqtt:ClientCertificateAuthorityPath={caPath}");
            var options = Options(new Uri($"mqtts://localhost:{kit.Server.MqttTlsPort}"));
            options.Secret = null; // the certificate alone authenticates d1
            options.ClientCertificates = [device];
            options.ServerCertificateValidation = (_, certificate, _, _) =>
            {
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(serverCa);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return certificate is X509Certificate2 presented && chain.Build(presented);
            };
            await AssertReceivesCommandAsync(kit, options);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task WebSocket_ConnectsAndReceivesACommand()
    {
        await using var kit = await PushTestKit.StartAsync();
        var options = Options(new Uri($"ws://127.0.0.1:{kit.Server.HttpPort}/mqtt"));
        await AssertReceivesCommandAsync(kit, options);
    }

    private static async Task AssertReceivesCommandAsync(PushTestKit kit, DeviceClientOptions options)
    {
        await using var client = new RelayDeviceClient(options);
        client.OnCommand("blink", static (command, _) => Task.FromResult(CommandResult.Success(new System.Text.Json.Nodes.JsonObject { ["times"] = command.Payload.GetProperty("times").GetInt32() })));
        var states = new ConcurrentQueue<DeviceConnectionState>();
        client.StateChanged += (_, e) => states.Enqueue(e.Current);
        await client.StartAsync();
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(MqttProtocolVersion.V500, client.ProtocolVersion);
        var id = await PushTestKit.PushAsync(kit.Http, "d1", "blink", """{"times":3}""");
        var status = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
        Assert.Equal("succeeded", status.GetProperty("state").GetString());
        Assert.Equal(3, status.GetProperty("result").GetProperty("times").GetInt32());
        await client.StopAsync();
        Assert.Equal([DeviceConnectionState.Connecting, DeviceConnectionState.Connected, DeviceConnectionState.Disconnected, DeviceConnectionState.Stopped], states);
    }
}
