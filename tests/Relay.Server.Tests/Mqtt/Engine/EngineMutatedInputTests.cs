using System.Buffers;
using System.Net.Sockets;
using System.Text;
using Relay.Server.Mqtt;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

/// <summary>
/// Valid client conversations (CONNECT, SUBSCRIBE, PUBLISH at each QoS, PUBREL, PINGREQ, DISCONNECT) with a few
/// bytes mutated, sent to the live TCP port. Whatever the mutation, the server answers or closes within the
/// bound, logs no error (RelayTestServer fails the test on one), releases every connection, and still serves a
/// well-behaved client. The reader checks declared lengths first, so no mutation can make it buffer more than
/// Relay:Mqtt:MaxPacketSize per connection.
/// </summary>
public sealed class EngineMutatedInputTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData(MqttProtocolVersion.V311, 1)]
    [InlineData(MqttProtocolVersion.V500, 2)]
    public async Task MutatedConversations_NeverHangCrashOrLeak(MqttProtocolVersion version, int seed)
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxPacketSize=4096", "Relay:Mqtt:MaxConnectionsPerIp=1000");
        var conversation = Conversation(version);
        var random = new Random(seed);
        const int Cases = 150;
        for (var i = 0; i < Cases; i++)
        {
            var mutated = Mutate(conversation, random);
            using var socket = new Socket(System.Net.Sockets.AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync("127.0.0.1", server.MqttPort);
            try
            {
                await socket.SendAsync(mutated);
                socket.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException)
            {
                // The server may already have closed on an early malformed byte: that is an answer too.
            }

            await ReadUntilClosedAsync(socket, $"case {i}: {Convert.ToHexString(mutated)}");
        }

        // Every connection is released: the gauges go back to zero.
        await Poll.UntilAsync(
            () => server.MqttMetrics().Connections(MqttTransport.Tcp) == 0 && server.MqttMetrics().ClientsConnected == 0,
            "every connection to be released",
            Bound,
            describe: () => Task.FromResult($"connections still open: {server.MqttMetrics().Connections(MqttTransport.Tcp)}"));

        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "after", version);
        await using var _ = client;
        Assert.Equal(0, connAck.ConnAck().ReasonCode);
        Assert.Equal([1], await client.SubscribeAndWaitAsync("still/#", 1));
    }

    private static async Task ReadUntilClosedAsync(Socket socket, string what)
    {
        var buffer = new byte[8192];
        using var timeout = new CancellationTokenSource(Bound);
        try
        {
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token) > 0)
            {
            }
        }
        catch (SocketException)
        {
            // Reset: closed.
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"the server neither answered nor closed within {Bound}: {what}");
        }
    }

    private static byte[] Conversation(MqttProtocolVersion version)
    {
        var writer = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteConnect(writer, new MqttConnectOptions { Version = version, ClientId = "fuzz", CleanStart = true, KeepAliveSeconds = 30 });
        MqttPacketWriter.WriteSubscribe(writer, version, 1, [new MqttSubscriptionRequest("f/#", 2)]);
        for (byte qos = 0; qos <= 2; qos++)
        {
            MqttPacketWriter.WritePublish(writer, version, "f/x"u8, qos, retain: qos == 1, dup: false, qos == 0 ? (ushort)0 : (ushort)(10 + qos), default, Encoding.UTF8.GetBytes("payload " + qos).AsSpan());
        }

        MqttPacketWriter.WriteAck(writer, MqttPacketType.PubRel, version, 12, MqttReasonCode.Success);
        MqttPacketWriter.WritePingReq(writer);
        MqttPacketWriter.WriteDisconnect(writer, version, MqttReasonCode.Success);
        return writer.WrittenSpan.ToArray();
    }

    // One to four changes: overwrite a byte, flip a bit, drop a byte, duplicate a run, or cut the tail.
    private static byte[] Mutate(byte[] original, Random random)
    {
        var bytes = new List<byte>(original);
        var changes = random.Next(1, 5);
        for (var c = 0; c < changes && bytes.Count > 1; c++)
        {
            var at = random.Next(bytes.Count);
            switch (random.Next(5))
            {
                case 0: bytes[at] = (byte)random.Next(256); break;
                case 1: bytes[at] ^= (byte)(1 << random.Next(8)); break;
                case 2: bytes.RemoveAt(at); break;
                case 3: bytes.InsertRange(at, bytes.GetRange(at, Math.Min(8, bytes.Count - at))); break;
                default: bytes.RemoveRange(at, bytes.Count - at); break;
            }
        }

        return [.. bytes];
    }
}
