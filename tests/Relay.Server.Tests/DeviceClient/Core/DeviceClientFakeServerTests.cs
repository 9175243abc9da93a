using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Relay.DeviceClient;
using Relay.DeviceClient.Internal;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>Backoff, duplicates, malformed input and version fallback, against a scripted server on a real socket.</summary>
public sealed class DeviceClientFakeServerTests
{
    private const string Command = """{"id":"0193f2c4a1b27c3e9d4f0a1b2c3d4e5f","name":"blink","payload":{"times":3},"expiresAt":"2099-01-01T00:00:00.000Z"}""";

    internal static DeviceClientOptions Options(Uri server, string device = "d1") => new()
    {
        Server = server,
        DeviceId = device,
        Secret = "device-secret-1",
        Random = static () => 0, // reconnect at once: these tests are about what happens, not when
    };

    [Fact]
    public void Backoff_FullJitterSequence_IsExact_AndResetsAfterStableTime()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var options = new ReconnectOptions();
        var backoff = new ReconnectBackoff(options, clock, static () => 0.5);

        // delay_n = r * min(32 s, 1 s * 2^n) with r = 0.5.
        double[] expected = [0.5, 1, 2, 4, 8, 16, 16, 16];
        Assert.Equal(expected, expected.Select(_ => backoff.NextDelay().TotalSeconds));

        // A connection shorter than StableConnectionTime (20 s) keeps the attempt count...
        backoff.OnConnected();
        clock.Advance(TimeSpan.FromSeconds(19));
        backoff.OnDisconnected();
        Assert.Equal(16, backoff.NextDelay().TotalSeconds);

        // ...one that stayed up 20 s starts over.
        backoff.OnConnected();
        clock.Advance(TimeSpan.FromSeconds(20));
        backoff.OnDisconnected();
        Assert.Equal([0.5, 1, 2], new[] { 0, 1, 2 }.Select(_ => backoff.NextDelay().TotalSeconds));

        // The bounds of the random range: 0 and the cap itself.
        var zero = new ReconnectBackoff(options, clock, static () => 0);
        Assert.Equal(TimeSpan.Zero, zero.NextDelay());
        var one = new ReconnectBackoff(options, clock, static () => 1);
        Assert.Equal(TimeSpan.FromSeconds(1), one.NextDelay());
    }

    [Fact]
    public async Task ReconnectLoop_WaitsTheBackoffDelays_OnTheTimeProvider()
    {
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var closedPort = FreePorts.Tcp(); // nobody listens: every attempt is refused at once
        var options = Options(new Uri($"mqtt://127.0.0.1:{closedPort}"));
        options.TimeProvider = clock;
        options.Random = static () => 0.5;
        options.ConnectTimeout = TimeSpan.FromHours(1); // its timer is told apart from the backoff's by this
        var errors = 0;
        await using var client = new RelayDeviceClient(options);
        client.Error += (_, _) => Interlocked.Increment(ref errors);
        await client.StartAsync();

        var delays = new List<double>();
        for (var i = 0; i < 7; i++)
        {
            var due = await clock.WaitForTimerAsync(due => due != options.ConnectTimeout);
            delays.Add(due.TotalSeconds);
            clock.Advance(due);
        }

        Assert.Equal([0.5, 1, 2, 4, 8, 16, 16], delays);
        Assert.True(Volatile.Read(ref errors) >= 7);
        Assert.NotEqual(DeviceConnectionState.Connected, client.State);
    }

    [Fact]
    public async Task DuplicateCommand_RunsTheHandlerOnce_AndReportsTheEarlierResultAgain()
    {
        await using var server = new FakeMqttServer();
        await using var client = new RelayDeviceClient(Options(server.Uri));
        var runs = 0;
        client.OnCommand("blink", (command, _) =>
        {
            Interlocked.Increment(ref runs);
            return Task.FromResult(CommandResult.Success(new System.Text.Json.Nodes.JsonObject { ["blinked"] = command.Payload.GetProperty("times").GetInt32() }));
        });
        await client.StartAsync();
        await using var peer = await server.AcceptAsync();
        await peer.AcceptSessionAsync();

        await peer.SendCommandAsync("devices/d1/commands", Command, packetId: 7);
        var first = await peer.ExpectPublishAsync("devices/d1/results");
        var ack = await peer.ExpectAsync(MqttPacketType.PubAck);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(ack.Frame(), peer.Version, out var puback));
        Assert.Equal(7, puback.PacketId);

        // The same command again (a redelivery after a lost PUBACK): not run, answered from memory.
        await peer.SendCommandAsync("devices/d1/commands", Command, packetId: 8, dup: true);
        var second = await peer.ExpectPublishAsync("devices/d1/results");
        ack = await peer.ExpectAsync(MqttPacketType.PubAck);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(ack.Frame(), peer.Version, out puback));
        Assert.Equal(8, puback.PacketId);

        Assert.Equal(1, Volatile.Read(ref runs));
        Assert.Equal(first, second);
        using var result = JsonDocument.Parse(first);
        Assert.Equal("0193f2c4a1b27c3e9d4f0a1b2c3d4e5f", result.RootElement.GetProperty("id").GetString());
        Assert.Equal("succeeded", result.RootElement.GetProperty("status").GetString());
        Assert.Equal(3, result.RootElement.GetProperty("payload").GetProperty("blinked").GetInt32());
        Assert.Equal(1, client.Statistics.DuplicateCommands);
        Assert.Equal(1, client.Statistics.CommandsExecuted);
    }

    public static TheoryData<string, byte[]> MalformedAnswers => new()
    {
        { "packet type 0", [0x00, 0x00] },
        { "oversized length", [0x30, 0xFF, 0xFF, 0xFF, 0x7F] },
        { "CONNACK with reserved flag bits", [0x20, 0x02, 0x02, 0x00] },
        { "PUBLISH before CONNACK", [0x30, 0x05, 0x00, 0x01, (byte)'a', 0x00, 0x00] },
        { "five-byte remaining length", [0x20, 0x80, 0x80, 0x80, 0x80, 0x01] },
    };

    [Theory]
    [MemberData(nameof(MalformedAnswers))]
    public async Task MalformedAnswerToConnect_RaisesError_Closes_AndReconnects(string what, byte[] answer)
    {
        await using var server = new FakeMqttServer();
        var options = Options(server.Uri);
        options.MaxPacketSize = 64 * 1024;
        await using var client = new RelayDeviceClient(options);
        var errors = new ConcurrentQueue<string>();
        var firstError = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        client.Error += (_, e) =>
        {
            errors.Enqueue(e.Message);
            firstError.TrySetResult();
        };
        await client.StartAsync();

        await using (var peer = await server.AcceptAsync())
        {
            await peer.ExpectAsync(MqttPacketType.Connect);
            await peer.SendAsync(answer);
            await firstError.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // The client closed this connection...
            Assert.Null(await peer.ReadAsync());
        }

        // ...and comes back with a new CONNECT, which this time succeeds.
        await using var again = await server.AcceptAsync();
        await again.AcceptSessionAsync();
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Contains(errors, e => e.Contains("CONNACK", StringComparison.Ordinal) || e.Contains("Malformed", StringComparison.Ordinal) || e.Contains("MaxPacketSize", StringComparison.Ordinal) || e.Contains("before", StringComparison.Ordinal));
        Assert.True(errors.Count >= 1, what);
    }

    [Fact]
    public async Task MalformedPacketAfterConnect_RaisesError_AndReconnects()
    {
        await using var server = new FakeMqttServer();
        var options = Options(server.Uri);
        options.MaxPacketSize = 1024;
        await using var client = new RelayDeviceClient(options);
        var error = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        client.Error += (_, e) => error.TrySetResult(e.Message);
        await client.StartAsync();
        await using (var peer = await server.AcceptAsync())
        {
            await peer.AcceptSessionAsync();
            await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));

            // A PUBLISH declaring 2 MB against a 1 KB limit: refused from the header, before any body.
            await peer.SendAsync([0x32, 0x80, 0x80, 0x80, 0x01]);
            Assert.Contains("MaxPacketSize", await error.Task.WaitAsync(TimeSpan.FromSeconds(30)), StringComparison.Ordinal);
            Assert.Null(await peer.ReadAsync());
        }

        await using var again = await server.AcceptAsync();
        await again.AcceptSessionAsync();
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(client.Statistics.Reconnects >= 1);
        Assert.Equal(1, client.Statistics.ProtocolErrors);
    }

    [Fact]
    public async Task Auto_FallsBackTo311_WhenTheServerRefuses5_AndGetsCommands()
    {
        await using var server = new FakeMqttServer();
        await using var client = new RelayDeviceClient(Options(server.Uri));
        var ran = new TaskCompletionSource<DeviceCommand>(TaskCreationOptions.RunContinuationsAsynchronously);
        client.OnCommand("blink", (command, _) =>
        {
            ran.TrySetResult(command);
            return Task.FromResult(CommandResult.Success());
        });
        await client.StartAsync();

        await using (var v5 = await server.AcceptAsync())
        {
            await v5.ExpectAsync(MqttPacketType.Connect);
            Assert.Equal(MqttProtocolVersion.V500, v5.Version);

            // What a 3.1.1-only broker answers to protocol level 5: CONNACK 0x01 unacceptable protocol version.
            await v5.SendAsync([0x20, 0x02, 0x00, 0x01]);
            Assert.Null(await v5.ReadAsync());
        }

        await using var v311 = await server.AcceptAsync();
        await v311.AcceptSessionAsync();
        Assert.Equal(MqttProtocolVersion.V311, v311.Version);
        await client.WaitConnectedAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(MqttProtocolVersion.V311, client.ProtocolVersion);

        await v311.SendCommandAsync("devices/d1/commands", Command, packetId: 1);
        Assert.Equal("blink", (await ran.Task.WaitAsync(TimeSpan.FromSeconds(30))).Name);
        using var result = JsonDocument.Parse(await v311.ExpectPublishAsync("devices/d1/results"));
        Assert.Equal("succeeded", result.RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task UnknownCommand_AndThrowingHandler_AreReportedAsFailed()
    {
        await using var server = new FakeMqttServer();
        await using var client = new RelayDeviceClient(Options(server.Uri));
        client.OnCommand("explode", (_, _) => throw new InvalidOperationException("boom"));
        await client.StartAsync();
        await using var peer = await server.AcceptAsync();
        await peer.AcceptSessionAsync();

        await peer.SendCommandAsync("devices/d1/commands", """{"id":"a1","name":"nope","payload":null}""", 1);
        using (var unknown = JsonDocument.Parse(await peer.ExpectPublishAsync("devices/d1/results")))
        {
            Assert.Equal("failed", unknown.RootElement.GetProperty("status").GetString());
            Assert.StartsWith("unknown command", unknown.RootElement.GetProperty("payload").GetProperty("error").GetString(), StringComparison.Ordinal);
        }

        await peer.SendCommandAsync("devices/d1/commands", """{"id":"a2","name":"explode","payload":null}""", 2);
        using var thrown = JsonDocument.Parse(await peer.ExpectPublishAsync("devices/d1/results"));
        Assert.Equal("failed", thrown.RootElement.GetProperty("status").GetString());
        Assert.Equal("boom", thrown.RootElement.GetProperty("payload").GetProperty("error").GetString());
    }
}
