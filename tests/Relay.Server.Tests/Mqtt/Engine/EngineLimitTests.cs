using System.Net.Http;
using System.Net.WebSockets;
using System.Buffers;
using System.Text;
using Relay.Server.Mqtt;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineLimitTests
{
    [Fact]
    public async Task ClientsReceiveMaximum_BoundsUnacknowledgedPublishes_MQTT_4_9()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "slow", MqttProtocolVersion.V500, o => o.Options.ReceiveMaximum = 1);
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("q", 1);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        for (var i = 0; i < 3; i++)
        {
            await publisher.PublishAsync("q", i.ToString(System.Globalization.CultureInfo.InvariantCulture), qos: 1);
            await publisher.ReceiveAsync(MqttPacketType.PubAck);
        }

        var window = await subscriber.DrainUntilPingAsync();
        var first = Assert.Single(window).Publish();
        await subscriber.AckAsync(MqttPacketType.PubAck, first.PacketId);
        var next = Assert.Single(await subscriber.DrainUntilPingAsync());
        Assert.Equal("1", next.PayloadText);
    }

    [Fact]
    public async Task ExceedingOurReceiveMaximum_IsDisconnect0x93_MQTT_3_3_4_9()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxInflight=2");
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "greedy");
        await using var c = client;
        for (ushort id = 1; id <= 3; id++)
        {
            await client.PublishAsync("t", "x", qos: 2, packetId: id);
        }

        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.ReceiveMaximumExceeded, packets[^1].Disconnect().ReasonCode);
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.Inflight));
    }

    [Fact]
    public async Task InboundPacketAboveMaximumPacketSize_IsDisconnect0x95()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxPacketSize=1024");
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "big");
        await using var c = client;
        await client.PublishAsync(Encoding.UTF8.GetBytes("t"), new byte[2000]);
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.PacketTooLarge, Assert.Single(packets).Disconnect().ReasonCode);
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.PacketSize));
    }

    [Fact]
    public async Task OutboundPacketAboveClientsMaximum_IsDroppedForThatClient_MQTT_3_1_2_25()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (small, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "small", MqttProtocolVersion.V500, o => o.Options.MaximumPacketSize = 100);
        await using var s = small;
        await small.SubscribeAndWaitAsync("t", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync(Encoding.UTF8.GetBytes("t"), new byte[500]);
        await publisher.PublishAsync("t", "fits");
        var received = await small.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("fits", received.PayloadText);
        Assert.Equal(1, server.MqttMetrics().Drops(MqttDropReason.TooLargeForClient));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311, 0x80)]
    [InlineData(MqttProtocolVersion.V500, (byte)MqttReasonCode.QuotaExceeded)]
    public async Task SubscriptionsPerSession_LimitGetsQuotaExceeded(MqttProtocolVersion version, byte expected)
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxSubscriptionsPerSession=1");
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c", version);
        await using var c = client;
        Assert.Equal([1], await client.SubscribeAndWaitAsync("a", 1));
        Assert.Equal([expected], await client.SubscribeAndWaitAsync("b", 1));
        Assert.Equal([1], await client.SubscribeAndWaitAsync("a", 1));
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.SubscriptionsPerSession));
    }

    [Fact]
    public async Task QueueLimit_DropOldest_KeepsTheNewest()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxQueuedMessages=2", "Relay:Mqtt:QueueDropPolicy=DropOldest");
        static void Persistent(MqttConnectOptionsBuilder o)
        {
            o.Options.CleanStart = false;
            o.Options.SessionExpiryInterval = 600;
        }

        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "away", MqttProtocolVersion.V500, Persistent);
        await subscriber.SubscribeAndWaitAsync("q", 1);
        await subscriber.DisconnectAsync();
        await subscriber.ReadUntilClosedAsync();
        await subscriber.DisposeAsync();
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        for (var i = 0; i < 5; i++)
        {
            await publisher.PublishAsync("q", i.ToString(System.Globalization.CultureInfo.InvariantCulture), qos: 1);
            await publisher.ReceiveAsync(MqttPacketType.PubAck);
        }

        var (again, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "away", MqttProtocolVersion.V500, Persistent);
        await using var a = again;
        var first = await again.ReceiveAsync(MqttPacketType.Publish);
        var second = await again.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal(["3", "4"], new[] { first.PayloadText, second.PayloadText });
        Assert.Equal(3, server.MqttMetrics().Drops(MqttDropReason.QueueFull));
        Assert.Equal(3, server.MqttMetrics().LimitHits(MqttLimit.QueuedMessages));
    }

    [Fact]
    public async Task MalformedPacketAfterV5Connect_IsDisconnect0x81()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "bad");
        await using var c = client;

        // PUBLISH with QoS 3 (both QoS bits set) is malformed [MQTT-3.3.1-4].
        await client.SendRawAsync(new byte[] { 0x36, 5, 0, 1, (byte)'t', 0, 1 });
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.MalformedPacket, Assert.Single(packets).Disconnect().ReasonCode);
        Assert.Equal(1, server.MqttMetrics().Ends(MqttEndReason.MalformedPacket));
    }

    [Fact]
    public async Task SubscriptionIdentifierInClientPublish_IsProtocolError_MQTT_3_3_4_6()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c");
        await using var c = client;
        await client.PublishAsync(Encoding.UTF8.GetBytes("t"), "x"u8.ToArray(), properties: new MqttPublishProperties { SubscriptionIdentifiers = new uint[] { 3 } });
        var packets = await client.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.ProtocolError, Assert.Single(packets).Disconnect().ReasonCode);
    }

    [Fact]
    public async Task MalformedPacketAfterV311Connect_JustCloses()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "bad", MqttProtocolVersion.V311);
        await using var c = client;
        await client.SendRawAsync(new byte[] { 0x36, 5, 0, 1, (byte)'t', 0, 1 });
        Assert.Empty(await client.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task SysTopics_ArePublished()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:SysIntervalSeconds=1");
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "ops");
        await using var c = client;
        await client.SubscribeAndWaitAsync("$SYS/broker/clients/connected", 0);
        var message = await client.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("$SYS/broker/clients/connected", message.Topic);
        Assert.True(int.TryParse(message.PayloadText, out _));
    }

    [Fact]
    public async Task Metrics_AreOnTheMetricsEndpoint()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "m");
        await using var c = client;
        await client.PublishAsync("t", "x", qos: 1);
        await client.ReceiveAsync(MqttPacketType.PubAck);
        using var http = new HttpClient();
        var text = await http.GetStringAsync(new Uri($"http://127.0.0.1:{server.HttpPort}/metrics"));
        Assert.Contains("relay_mqtt_connections{transport=\"tcp\"} 1", text, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_messages_received_total{qos=\"1\"} 1", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WebSocket_CarriesMqtt_AcrossArbitraryFrameSplits_MQTT_6_0_0()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "tcp-sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("ws/#", 0);

        using var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("mqtt");
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{server.HttpPort}/mqtt"), CancellationToken.None);
        Assert.Equal("mqtt", socket.SubProtocol);

        var bytes = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteConnect(bytes, new MqttConnectOptions { Version = MqttProtocolVersion.V500, ClientId = "ws", CleanStart = true, KeepAliveSeconds = 60 });
        MqttPacketWriter.WritePublish(bytes, MqttProtocolVersion.V500, "ws/a"u8, 0, false, false, 0, default, "over websocket"u8);
        var all = bytes.WrittenMemory;

        // One byte, then the rest of CONNECT joined with PUBLISH in one frame.
        await socket.SendAsync(all[..1], WebSocketMessageType.Binary, true, CancellationToken.None);
        await socket.SendAsync(all[1..], WebSocketMessageType.Binary, true, CancellationToken.None);
        var buffer = new byte[256];
        var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
        Assert.Equal(0x20, buffer[0]);
        Assert.True(result.Count >= 4);

        var message = await subscriber.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("over websocket", message.PayloadText);
        Assert.Equal(1, server.MqttMetrics().ConnectionsTotal(MqttTransport.WebSocket));
    }
}
