using System.Buffers;
using System.Text;
using System.Text.Json;
using Relay.DeviceClient;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>In-flight resend, keep-alive, connect timeout, DISCONNECT on stop and remembered results across a restart.</summary>
public sealed class DeviceClientSessionTests
{
    [Fact]
    public async Task UnacknowledgedQos1Publish_IsResentWithDup_AfterTheReconnect()
    {
        await using var server = new FakeMqttServer();
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var options = DeviceClientFakeServerTests.Options(server.Uri);
        options.TimeProvider = clock;
        await using var client = new RelayDeviceClient(options);
        await client.StartAsync();
        ushort firstId;
        TimerWatchingFakeTimeProvider.ArmedTimer firstKeepAlive;
        await using (var peer = await server.AcceptAsync())
        {
            await peer.AcceptSessionAsync();
            await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
            _ = client.PublishTelemetryAsync("t", "{\"v\":1}"u8.ToArray()).AsTask().ContinueWith(static t => t.Exception, TaskScheduler.Default);
            var publish = await peer.ExpectAsync(MqttPacketType.Publish);
            Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(publish.Frame(), peer.Version, out var first));
            Assert.False(first.Dup);
            firstId = first.PacketId;
            firstKeepAlive = await clock.WaitForArmedTimerAsync(t => t.Requested == options.KeepAlive);

            // The connection drops before the PUBACK.
        }

        await using var again = await server.AcceptAsync();
        await again.ExpectAsync(MqttPacketType.Connect);
        await again.SendConnAckAsync(sessionPresent: true);
        var resent = await again.ExpectAsync(MqttPacketType.Publish);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(resent.Frame(), again.Version, out var dup));
        Assert.True(dup.Dup);
        Assert.Equal(firstId, dup.PacketId);
        Assert.Equal("devices/d1/telemetry/t", Encoding.UTF8.GetString(dup.Topic.ToArray()));
        Assert.Equal("{\"v\":1}", Encoding.UTF8.GetString(dup.Payload.ToArray()));

        // The resend is counted once its write completed, which the server may see first; this connection's
        // keep-alive starts after the resends, so once its timer is armed the count is in.
        await clock.WaitForArmedTimerAsync(t => t.Requested == options.KeepAlive && t.Id != firstKeepAlive.Id);
        Assert.Equal(1, client.Statistics.ResentMessages);
    }

    [Fact]
    public async Task APublishMadeAsTheClientConnects_GoesOutOnce_NotAlsoAsAResendOnTheSameConnection()
    {
        await using var server = new FakeMqttServer();
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var options = DeviceClientFakeServerTests.Options(server.Uri);
        options.TimeProvider = clock;
        await using var client = new RelayDeviceClient(options);
        Task? published = null;

        // StateChanged runs on the connect loop as it reaches Connected, so this publish takes its place in
        // flight before the loop resends what the last connection left unacknowledged.
        client.StateChanged += (_, e) =>
        {
            if (e.Current == DeviceConnectionState.Connected)
            {
                published ??= client.PublishTelemetryAsync("t", "{\"v\":1}"u8.ToArray()).AsTask();
            }
        };
        await client.StartAsync();
        await using var peer = await server.AcceptAsync();
        await peer.AcceptSessionAsync();
        var publish = await peer.ExpectAsync(MqttPacketType.Publish);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(publish.Frame(), peer.Version, out var fresh));
        Assert.False(fresh.Dup);

        // The keep-alive starts after the resends: once its timer is armed, a resend would have gone out.
        await clock.WaitForTimerAsync(due => due == options.KeepAlive);
        Assert.Equal(0, client.Statistics.ResentMessages);
        Assert.Equal(1, client.Statistics.PublishedMessages);

        await peer.SendAsync(FakeMqttServer.Build(w => MqttPacketWriter.WriteAck(w, MqttPacketType.PubAck, peer.Version, fresh.PacketId, MqttReasonCode.Success)));
        await published!.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task NoPingResp_WithinOperationTimeout_ClosesAndReconnects()
    {
        await using var server = new FakeMqttServer();
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var options = DeviceClientFakeServerTests.Options(server.Uri);
        options.TimeProvider = clock;
        options.KeepAlive = TimeSpan.FromSeconds(30);
        options.OperationTimeout = TimeSpan.FromSeconds(7);
        var error = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var client = new RelayDeviceClient(options);
        client.Error += (_, e) => error.TrySetResult(e.Message);
        await client.StartAsync();
        await using (var peer = await server.AcceptAsync())
        {
            await peer.AcceptSessionAsync();
            await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
            clock.Advance(await clock.WaitForTimerAsync(due => due == options.KeepAlive));
            var ping = await peer.ReadAsync();
            Assert.Equal(MqttPacketType.PingReq, ping?.Type);

            // The server stays silent; OperationTimeout later the connection is declared dead.
            clock.Advance(await clock.WaitForTimerAsync(due => due == options.OperationTimeout));
            Assert.Contains("PINGRESP", await error.Task.WaitAsync(TimeSpan.FromSeconds(30)), StringComparison.Ordinal);
            Assert.Null(await peer.ReadAsync());
        }

        await using var again = await server.AcceptAsync();
        await again.AcceptSessionAsync();
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task NoConnAck_WithinConnectTimeout_GivesUpAndRetries()
    {
        await using var server = new FakeMqttServer();
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var options = DeviceClientFakeServerTests.Options(server.Uri);
        options.TimeProvider = clock;
        options.ConnectTimeout = TimeSpan.FromSeconds(9);
        var error = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var client = new RelayDeviceClient(options);
        client.Error += (_, e) => error.TrySetResult(e.Message);
        await client.StartAsync();
        await using (var silent = await server.AcceptAsync())
        {
            await silent.ExpectAsync(MqttPacketType.Connect);
            clock.Advance(await clock.WaitForTimerAsync(due => due == options.ConnectTimeout));
            Assert.Contains("CONNACK", await error.Task.WaitAsync(TimeSpan.FromSeconds(30)), StringComparison.Ordinal);
            Assert.Null(await silent.ReadAsync());
        }

        await using var again = await server.AcceptAsync();
        await again.AcceptSessionAsync();
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Stop_SendsDisconnect_AndConnectAsksForAPersistentSession()
    {
        await using var server = new FakeMqttServer();
        await using var client = new RelayDeviceClient(DeviceClientFakeServerTests.Options(server.Uri));
        await client.StartAsync();
        await using var peer = await server.AcceptAsync();
        var connectPacket = await peer.ExpectAsync(MqttPacketType.Connect);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(connectPacket.Frame(), out var connect));
        Assert.False(connect.CleanStart);
        Assert.Equal((uint)TimeSpan.FromDays(1).TotalSeconds, connect.Properties.SessionExpiryInterval);
        Assert.Equal("d1", Encoding.UTF8.GetString(connect.ClientId.ToArray()));
        Assert.Equal("d1", Encoding.UTF8.GetString(connect.Username.ToArray()));
        Assert.Equal("device-secret-1", Encoding.UTF8.GetString(connect.Password.ToArray()));
        await peer.SendConnAckAsync(sessionPresent: true);

        // Session present: the server kept the subscription, so the client sends no SUBSCRIBE.
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await client.StopAsync();
        var disconnect = await peer.ReadAsync();
        Assert.Equal(MqttPacketType.Disconnect, disconnect?.Type);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadDisconnect(disconnect!.Frame(), peer.Version, out var reason));
        Assert.Equal(MqttReasonCode.Success, reason.ReasonCode);
        Assert.Null(await peer.ReadAsync());
        Assert.Equal(DeviceConnectionState.Stopped, client.State);
    }

    [Fact]
    public async Task RememberedResults_SurviveARestart_WithStateFilePath()
    {
        const string Command = """{"id":"c0ffee","name":"once","payload":null}""";
        var directory = Directory.CreateTempSubdirectory("relay-dc-state-").FullName;
        try
        {
            var runs = 0;
            string firstResult;
            await using var server = new FakeMqttServer();
            var options = DeviceClientFakeServerTests.Options(server.Uri);
            options.Commands.StateFilePath = Path.Combine(directory, "commands.state");
            await using (var client = new RelayDeviceClient(options))
            {
                client.OnCommand("once", (_, _) => Task.FromResult(CommandResult.Success(new System.Text.Json.Nodes.JsonObject { ["run"] = Interlocked.Increment(ref runs) })));
                await client.StartAsync();
                await using var peer = await server.AcceptAsync();
                await peer.AcceptSessionAsync();
                await peer.SendCommandAsync("devices/d1/commands", Command, 1);
                firstResult = await peer.ExpectPublishAsync("devices/d1/results");
                await peer.ExpectAsync(MqttPacketType.PubAck);
                await client.StopAsync();
            }

            var restarted = DeviceClientFakeServerTests.Options(server.Uri);
            restarted.Commands.StateFilePath = options.Commands.StateFilePath;
            await using var again = new RelayDeviceClient(restarted);
            again.OnCommand("once", (_, _) => Task.FromResult(CommandResult.Success(new System.Text.Json.Nodes.JsonObject { ["run"] = Interlocked.Increment(ref runs) })));
            await again.StartAsync();
            await using var peer2 = await server.AcceptAsync();
            await peer2.AcceptSessionAsync();
            await peer2.SendCommandAsync("devices/d1/commands", Command, 2, dup: true);
            Assert.Equal(firstResult, await peer2.ExpectPublishAsync("devices/d1/results"));
            Assert.Equal(1, Volatile.Read(ref runs));
            using var body = JsonDocument.Parse(firstResult);
            Assert.Equal(1, body.RootElement.GetProperty("payload").GetProperty("run").GetInt32());
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}

/// <summary>The offline queue's journal on its own: torn tail records (a kill -9 mid-write) and compaction.</summary>
public sealed class OfflineQueueJournalTests
{
    [Fact]
    public void TornLastRecord_IsCutOff_AndEverythingBeforeItSurvives()
    {
        var directory = Directory.CreateTempSubdirectory("relay-dc-journal-").FullName;
        try
        {
            var options = new OfflineQueueOptions { FilePath = Path.Combine(directory, "q"), Capacity = 100 };
            using (var queue = new Relay.DeviceClient.Internal.OfflineQueue(options))
            {
                queue.Load();
                for (var i = 0; i < 5; i++)
                {
                    queue.Enqueue(new Relay.DeviceClient.Internal.OutgoingMessage("t"u8.ToArray(), Encoding.UTF8.GetBytes($"m{i}"), 1, false, null, null));
                }
            }

            // Lose the last 3 bytes, as a crash in the middle of the last append would.
            var bytes = File.ReadAllBytes(options.FilePath);
            File.WriteAllBytes(options.FilePath, bytes[..^3]);

            using var reopened = new Relay.DeviceClient.Internal.OfflineQueue(options);
            Assert.Equal(4, reopened.Load());
            var payloads = new List<string>();
            while (reopened.TryDequeue() is { } m)
            {
                payloads.Add(Encoding.UTF8.GetString(m.Payload));
                reopened.Complete(m);
            }

            Assert.Equal(["m0", "m1", "m2", "m3"], payloads);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void AcknowledgedMessages_AreCompactedAway_SoTheFileStaysBounded()
    {
        var directory = Directory.CreateTempSubdirectory("relay-dc-journal-").FullName;
        try
        {
            var options = new OfflineQueueOptions { FilePath = Path.Combine(directory, "q"), Capacity = 10 };
            using var queue = new Relay.DeviceClient.Internal.OfflineQueue(options);
            queue.Load();
            var payload = new byte[1000];
            for (var i = 0; i < 2000; i++)
            {
                queue.Enqueue(new Relay.DeviceClient.Internal.OutgoingMessage("t"u8.ToArray(), payload, 1, false, null, null));
                queue.Complete(queue.TryDequeue()!);
            }

            // 2,000 KB went through; what stays on disk is bounded by the dead-record threshold, not by history.
            Assert.True(new FileInfo(options.FilePath).Length < 200_000, $"journal is {new FileInfo(options.FilePath).Length} bytes");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}

/// <summary>Command execution details against a scripted server.</summary>
public sealed class DeviceClientCommandTests
{
    [Fact]
    public async Task Handlers_RunAtMostMaxConcurrentCommands_AtOnce()
    {
        await using var server = new FakeMqttServer();
        var options = DeviceClientFakeServerTests.Options(server.Uri);
        options.Commands.MaxConcurrentCommands = 2;
        await using var client = new RelayDeviceClient(options);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = 0;
        var peak = 0;
        var twoRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        client.OnCommand("hold", async (_, _) =>
        {
            var now = Interlocked.Increment(ref running);
            InterlockedMax(ref peak, now);
            if (now == 2)
            {
                twoRunning.TrySetResult();
            }

            await release.Task;
            Interlocked.Decrement(ref running);
            return CommandResult.Success();
        });
        await client.StartAsync();
        await using var peer = await server.AcceptAsync();
        await peer.AcceptSessionAsync();
        for (ushort i = 1; i <= 5; i++)
        {
            await peer.SendCommandAsync("devices/d1/commands", $$"""{"id":"h{{i}}","name":"hold","payload":null}""", i);
        }

        await twoRunning.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // Five commands were sent; two handlers run, the rest wait for a slot (peak checked once all five ran).
        Assert.Equal(2, Volatile.Read(ref running));
        release.TrySetResult();
        var results = new HashSet<string>();
        for (var i = 0; i < 5; i++)
        {
            using var body = JsonDocument.Parse(await peer.ExpectPublishAsync("devices/d1/results"));
            results.Add(body.RootElement.GetProperty("id").GetString()!);
        }

        Assert.Equal(5, results.Count);
        Assert.Equal(2, Volatile.Read(ref peak));
    }

    [Fact]
    public async Task Mqtt5ResponseTopicAndCorrelationData_AreUsedForTheResult()
    {
        await using var server = new FakeMqttServer();
        await using var client = new RelayDeviceClient(DeviceClientFakeServerTests.Options(server.Uri));
        client.OnCommand("ping", static (_, _) => Task.FromResult(CommandResult.Success()));
        await client.StartAsync();
        await using var peer = await server.AcceptAsync();
        await peer.AcceptSessionAsync();
        var properties = new MqttPublishProperties { ResponseTopic = "devices/d1/replies", CorrelationData = "corr-1"u8.ToArray(), HasCorrelationData = true };
        await peer.SendAsync(FakeMqttServer.Build(w => MqttPacketWriter.WritePublish(w, MqttProtocolVersion.V500, "devices/d1/commands"u8, 1, false, false, 3, properties, """{"id":"r1","name":"ping","payload":null}"""u8)));
        var publish = await peer.ExpectAsync(MqttPacketType.Publish);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(publish.Frame(), MqttProtocolVersion.V500, out var result));
        Assert.Equal("devices/d1/replies", Encoding.UTF8.GetString(result.Topic.ToArray()));
        Assert.True(result.Properties.HasCorrelationData);
        Assert.Equal("corr-1", Encoding.UTF8.GetString(result.Properties.CorrelationData.ToArray()));
        using var body = JsonDocument.Parse(result.Payload.ToArray());
        Assert.Equal("r1", body.RootElement.GetProperty("id").GetString());
    }

    private static void InterlockedMax(ref int target, int value)
    {
        var current = Volatile.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }
}
