using System.Net.Sockets;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// Bytes no client should send, at the live MQTT port: the broker closes each such connection (the test
/// waits for the close, bounded) and still serves a normal client afterwards.
/// </summary>
public abstract class MalformedInputTests<TBroker>
    where TBroker : MqttBroker, IMqttBrokerStarter<TBroker>
{
    private static readonly TimeSpan CloseTimeout = TimeSpan.FromSeconds(30);

    // §2.2.1 (3.1.1 and 5.0): packet type 0 is reserved; the first packet must be CONNECT
    // [MQTT-3.1.0-1], otherwise the server closes the network connection.
    [BrokerFact]
    public async Task RandomGarbage_IsClosed_AndTheBrokerStillServes()
    {
        await using var broker = await TBroker.StartAsync();
        var garbage = new byte[4096];
        new Random(20261123).NextBytes(garbage);
        // Type 0 (reserved) first, so the garbage cannot read as a CONNECT with a huge length that the
        // broker would rightly wait for.
        garbage[0] = 0x00;
        using (var client = await RawMqtt.ConnectAsync(broker.TcpPort))
        {
            await client.GetStream().WriteAsync(garbage);
            await RawMqtt.WaitForCloseAsync(client, broker, "random garbage", CloseTimeout);
        }

        await AssertStillServesAsync(broker);
    }

    // §2.2.3: 268,435,455 (0xFF 0xFF 0xFF 0x7F) is the largest remaining length; it exceeds the broker's
    // maximum packet size (ours 256 KiB, Mosquitto configured the same), so the broker must refuse it
    // from the header alone (5.0 [MQTT-3.1.2-24] spirit; ours: check the declared length first).
    [BrokerFact]
    public async Task ConnectDeclaringTheLargestRemainingLength_IsClosedWithoutWaitingForTheBody()
    {
        await using var broker = await TBroker.StartAsync();
        using (var client = await RawMqtt.ConnectAsync(broker.TcpPort))
        {
            await client.GetStream().WriteAsync(new byte[] { 0x10, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x04, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 0x04 });
            await RawMqtt.WaitForCloseAsync(client, broker, "CONNECT with remaining length 268,435,455", CloseTimeout);
        }

        await AssertStillServesAsync(broker);
    }

    // A five-byte remaining length is malformed (§2.2.3: at most four bytes).
    [BrokerFact]
    public async Task FiveByteRemainingLength_IsClosed()
    {
        await using var broker = await TBroker.StartAsync();
        using (var client = await RawMqtt.ConnectAsync(broker.TcpPort))
        {
            await client.GetStream().WriteAsync(new byte[] { 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01 });
            await RawMqtt.WaitForCloseAsync(client, broker, "five-byte remaining length", CloseTimeout);
        }

        await AssertStillServesAsync(broker);
    }

    // Truncated packets: the client half-closes mid-packet (mid-header, mid-length, mid-body); the broker
    // sees end of stream inside a frame and closes its side too.
    [BrokerTheory]
    [InlineData("header only", 1)]
    [InlineData("inside the remaining length", -1)]
    [InlineData("half the body", 0)]
    public async Task TruncatedConnect_FollowedByEndOfStream_IsClosed(string where, int bytes)
    {
        await using var broker = await TBroker.StartAsync();
        var connect = RawMqtt.Connect311("d1", "d1", MqttBroker.Secret("d1"));
        byte[] prefix = bytes switch
        {
            -1 => [0x10, 0x80],
            0 => connect[..(connect.Length / 2)],
            _ => connect[..bytes],
        };
        using (var client = await RawMqtt.ConnectAsync(broker.TcpPort))
        {
            await client.GetStream().WriteAsync(prefix);
            client.Client.Shutdown(SocketShutdown.Send);
            var answer = await RawMqtt.WaitForCloseAsync(client, broker, "truncated CONNECT (" + where + ")", CloseTimeout);
            // Nothing complete arrived, so there is nothing to acknowledge.
            Assert.Empty(answer);
        }

        await AssertStillServesAsync(broker);
    }

    // A CONNECT whose remaining length (2) ends inside the protocol name: malformed (§1.5.3 / §3.1.2.1).
    [BrokerFact]
    public async Task ConnectWhoseFieldsOverrunItsRemainingLength_IsClosed()
    {
        await using var broker = await TBroker.StartAsync();
        using (var client = await RawMqtt.ConnectAsync(broker.TcpPort))
        {
            await client.GetStream().WriteAsync(new byte[] { 0x10, 0x02, 0x00, 0x04 });
            await RawMqtt.WaitForCloseAsync(client, broker, "CONNECT shorter than its fields", CloseTimeout);
        }

        await AssertStillServesAsync(broker);
    }

    /// <summary>A raw CONNECT gets CONNACK accepted (§3.2: 0x20 0x02, flags 0, code 0), and so does paho.</summary>
    protected static async Task AssertStillServesAsync(MqttBroker broker)
    {
        using (var client = await RawMqtt.ConnectAsync(broker.TcpPort))
        {
            await client.GetStream().WriteAsync(RawMqtt.Connect311("d1", "d1", MqttBroker.Secret("d1")));
            var connack = await RawMqtt.ReadExactlyAsync(client, 4, CloseTimeout);
            Assert.Equal(new byte[] { 0x20, 0x02, 0x00, 0x00 }, connack);
        }

        await using var paho = await Paho.RunAsync(broker, new("d2", "d2", MqttVersion.V5), "connect");
        Assert.Equal(0, Paho.ConnAck(paho));
    }
}

public sealed class MalformedInputTests_Mosquitto : MalformedInputTests<MosquittoBroker>;

[Trait("Broker", "Relay")]
public sealed class MalformedInputTests_Relay : MalformedInputTests<RelayBroker>;
