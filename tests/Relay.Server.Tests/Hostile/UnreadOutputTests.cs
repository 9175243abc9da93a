using System.Buffers;
using System.Diagnostics;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's H3: a client that never reads while it makes the server answer (a PUBACK 0x87 with
/// its reason string for each 8-byte denied PUBLISH, a 6x amplifier) used to grow the server's output
/// buffer without bound. Now Relay:Mqtt:MaxPendingOutputBytes caps what one connection may leave unread:
/// past it the connection is closed (v5 DISCONNECT 0x97), counted and logged, while a well-behaved
/// subscriber of the same topic misses nothing.
/// </summary>
public sealed class UnreadOutputTests
{
    private const int MaxPending = 1024 * 1024;

    // Sent until the server gives up on the connection. Without the limit the answers to it (~6x) would be
    // ~190 MB in the server's output buffer, well past the RSS margin below.
    private const long FloodBytes = 32L * 1024 * 1024;

    // What the test process may grow by during the flood. The server's own share is bounded by the limit
    // (1 MiB plus one packet); the rest of the margin is for other tests running beside this one.
    private const long RssMargin = 150L * 1024 * 1024;

    [Theory]
    [InlineData("Sockets")]
    [InlineData("Kestrel")]
    public async Task AClientThatNeverReads_IsDisconnected_AndAWellBehavedSubscriberGetsEveryMessage(string transport)
    {
        await using var server = await EngineTestServer.StartAsync(
            $"Relay:Mqtt:TcpTransport={transport}",
            $"Relay:Mqtt:MaxPendingOutputBytes={MaxPending}",
            "Relay:Mqtt:Acl:0:Permission=allow",
            "Relay:Mqtt:Acl:0:Topic=flood/#");
        var metrics = server.MqttMetrics();

        var (good, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "good");
        await using var g = good;
        Assert.Equal([1], await good.SubscribeAndWaitAsync("flood/#", 1));

        // The attacker: a 4 KiB receive window, subscribed like the good client, then never reads again.
        var attacker = await MqttTestClient.OpenAsync(server.MqttPort, MqttProtocolVersion.V500, receiveBufferSize: 4096);
        await using var a = attacker;
        await MqttTestClient.ConnectAsync(attacker, "attacker");
        Assert.Equal([1], await attacker.SubscribeAndWaitAsync("flood/#", 1));

        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "publisher");
        await using var p = publisher;

        GC.Collect();
        GC.WaitForPendingFinalizers();
        var rssBefore = Process.GetCurrentProcess().WorkingSet64;

        // Denied QoS 1 PUBLISHes to "x": each 8 bytes in, a ~48-byte PUBACK 0x87 with reason string out.
        var chunk = DeniedPublishes(64 * 1024);
        var flood = Task.Run(async () =>
        {
            long sent = 0;
            try
            {
                while (sent < FloodBytes && metrics.LimitHits(MqttLimit.PendingOutput) == 0)
                {
                    await attacker.SendRawAsync(chunk);
                    sent += chunk.Length;
                }
            }
            catch (IOException)
            {
                // The server closed the connection: what the test waits for.
            }

            return sent;
        });

        // Meanwhile the application traffic goes on: the good subscriber must get all of it.
        const int Messages = 200;
        for (var i = 0; i < Messages; i++)
        {
            await publisher.PublishAsync("flood/t", $"m{i}", qos: 1, packetId: (ushort)(i + 1));
            Assert.Equal(MqttReasonCode.Success, (await publisher.ReceiveAsync(MqttPacketType.PubAck)).Ack().ReasonCode);
        }

        for (var i = 0; i < Messages; i++)
        {
            var message = await good.ReceiveAsync(MqttPacketType.Publish);
            Assert.Equal($"m{i}", message.PayloadText);
            await good.AckAsync(MqttPacketType.PubAck, message.Publish().PacketId);
        }

        var floodSent = await flood;
        await Poll.UntilAsync(() => metrics.LimitHits(MqttLimit.PendingOutput) == 1 && metrics.Ends(MqttEndReason.LimitExceeded) == 1, $"the non-reading client to be disconnected (sent {floodSent} B)");
        Assert.True(metrics.PendingOutputPeak <= MaxPending + (256 * 1024), $"one connection had {metrics.PendingOutputPeak} B pending; the limit is {MaxPending} B plus one packet");
        await Poll.UntilAsync(() => metrics.PendingOutputBytes < 64 * 1024, "the closed connection's output to be released");

        GC.Collect();
        GC.WaitForPendingFinalizers();
        var growth = Process.GetCurrentProcess().WorkingSet64 - rssBefore;
        Assert.True(growth < RssMargin, $"the process grew by {growth / (1024 * 1024)} MiB during the flood (margin {RssMargin / (1024 * 1024)} MiB)");

        // The good client is still served.
        Assert.Empty(await good.DrainUntilPingAsync());
    }

    private static byte[] DeniedPublishes(int size)
    {
        var writer = new ArrayBufferWriter<byte>(size + 64);
        ushort id = 0;
        while (writer.WrittenCount < size)
        {
            id = (ushort)(id == ushort.MaxValue ? 1 : id + 1);
            MqttPacketWriter.WritePublish(writer, MqttProtocolVersion.V500, "x"u8, 1, false, false, id, default, ReadOnlySpan<byte>.Empty);
        }

        return writer.WrittenSpan.ToArray();
    }
}
