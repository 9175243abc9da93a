using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Turn;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineSessionTests
{
    private static void Persistent(MqttConnectOptionsBuilder o)
    {
        o.Options.CleanStart = false;
        o.Options.SessionExpiryInterval = 3600;
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PersistentSession_QueuesWhileOffline_AndResumes_MQTT_3_1_2_5(MqttProtocolVersion version)
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "durable", version, Persistent);
        await subscriber.SubscribeAndWaitAsync("q", 1);
        await subscriber.DisconnectAsync();
        await subscriber.ReadUntilClosedAsync();
        await subscriber.DisposeAsync();

        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub", version);
        await using var p = publisher;
        await publisher.PublishAsync("q", "while-away", qos: 1);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);

        var (again, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "durable", version, Persistent);
        await using var a = again;
        Assert.True(connAck.ConnAck().SessionPresent);
        var message = await again.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("while-away", message.PayloadText);
        Assert.False(message.Publish().Dup);
    }

    [Fact]
    public async Task UnacknowledgedMessage_IsResentWithDup_OnReconnect_MQTT_4_4_0_1()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "durable", MqttProtocolVersion.V500, Persistent);
        await subscriber.SubscribeAndWaitAsync("q", 1);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("q", "m1", qos: 1);
        var first = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish();
        var firstId = first.PacketId;
        await subscriber.DisposeAsync();

        var (again, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "durable", MqttProtocolVersion.V500, Persistent);
        await using var a = again;
        Assert.True(connAck.ConnAck().SessionPresent);
        var resent = (await again.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.True(resent.Dup);
        Assert.Equal(firstId, resent.PacketId);
        await again.AckAsync(MqttPacketType.PubAck, resent.PacketId);
        Assert.Empty(await again.DrainUntilPingAsync());
    }

    [Fact]
    public async Task CleanStart_DiscardsTheOldSession_MQTT_3_1_2_4()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c", MqttProtocolVersion.V500, Persistent);
        await subscriber.SubscribeAndWaitAsync("q", 1);
        await subscriber.DisconnectAsync();
        await subscriber.ReadUntilClosedAsync();
        await subscriber.DisposeAsync();

        var (again, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "c");
        await using var a = again;
        Assert.False(connAck.ConnAck().SessionPresent);
        await again.PublishAsync("q", "x", qos: 1);
        await again.ReceiveAsync(MqttPacketType.PubAck);
        Assert.Empty(await again.DrainUntilPingAsync());
    }

    [Fact]
    public async Task SessionExpiry_EndsTheOfflineSession()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await EngineTestServer.StartAsync(s => s.AddSingleton<TimeProvider>(clock));
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "short", MqttProtocolVersion.V500, o =>
        {
            o.Options.CleanStart = false;
            o.Options.SessionExpiryInterval = 60;
        });
        await client.SubscribeAndWaitAsync("x", 1);
        await client.DisconnectAsync();
        await client.ReadUntilClosedAsync();
        await client.DisposeAsync();
        Assert.Equal(1, server.MqttMetrics().SessionsCurrent);
        clock.Advance(TimeSpan.FromSeconds(61));
        await Poll.UntilAsync(() => server.MqttMetrics().SessionsCurrent == 0, "the session to expire");
        Assert.Equal(0, server.MqttMetrics().SubscriptionCount);
    }

    [Fact]
    public async Task QueuedMessagePastItsExpiry_IsDropped_MQTT_3_3_2_5()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await EngineTestServer.StartAsync(s => s.AddSingleton<TimeProvider>(clock));
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "d", MqttProtocolVersion.V500, Persistent);
        await subscriber.SubscribeAndWaitAsync("q", 1);
        await subscriber.DisconnectAsync();
        await subscriber.ReadUntilClosedAsync();
        await subscriber.DisposeAsync();

        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("q", "short-lived", qos: 1, properties: new MqttPublishProperties { MessageExpiryInterval = 5 });
        await publisher.PublishAsync("q", "long-lived", qos: 1, properties: new MqttPublishProperties { MessageExpiryInterval = 500 });
        await publisher.ReceiveAsync(MqttPacketType.PubAck);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);
        clock.Advance(TimeSpan.FromSeconds(10));

        var (again, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "d", MqttProtocolVersion.V500, Persistent);
        await using var a = again;
        var message = await again.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("long-lived", message.PayloadText);

        // [MQTT-3.3.2-6]: the interval forwarded is what is left of it.
        Assert.InRange(message.Publish().Properties.MessageExpiryInterval!.Value, 1u, 490u);
        Assert.Equal(1, server.MqttMetrics().Drops(MqttDropReason.Expired));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Will_IsPublishedWhenTheConnectionDrops_MQTT_3_1_2_8(MqttProtocolVersion version)
    {
        await using var server = await EngineTestServer.StartAsync();
        var (watcher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "watcher", version);
        await using var w = watcher;
        await watcher.SubscribeAndWaitAsync("wills/#", 1);
        var (dying, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "dying", version, o =>
        {
            o.Options.WillTopic = "wills/dying";
            o.Options.WillPayload = "gone"u8.ToArray();
            o.Options.WillQoS = 1;
        });
        await dying.DisposeAsync();
        var will = await watcher.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("wills/dying", will.Topic);
        Assert.Equal("gone", will.PayloadText);
    }

    [Fact]
    public async Task Will_IsDiscardedOnNormalDisconnect_MQTT_3_14_4_3_ButSentWith0x04()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (watcher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "watcher");
        await using var w = watcher;
        await watcher.SubscribeAndWaitAsync("wills/#", 0);
        void WithWill(MqttConnectOptionsBuilder o, string topic)
        {
            o.Options.WillTopic = topic;
            o.Options.WillPayload = "gone"u8.ToArray();
        }

        var (polite, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "polite", MqttProtocolVersion.V500, o => WithWill(o, "wills/polite"));
        await polite.DisconnectAsync();
        await polite.ReadUntilClosedAsync();
        await polite.DisposeAsync();

        var (withWill, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "asks", MqttProtocolVersion.V500, o => WithWill(o, "wills/asks"));
        await withWill.DisconnectAsync(MqttReasonCode.DisconnectWithWill);
        await withWill.ReadUntilClosedAsync();
        await withWill.DisposeAsync();

        var will = await watcher.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("wills/asks", will.Topic);
        Assert.Empty(await watcher.DrainUntilPingAsync());
    }

    [Fact]
    public async Task WillDelay_IsCancelledByReconnectWithinTheDelay()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (watcher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "watcher");
        await using var w = watcher;
        await watcher.SubscribeAndWaitAsync("wills/#", 0);
        void Delayed(MqttConnectOptionsBuilder o)
        {
            Persistent(o);
            o.Options.WillTopic = "wills/delayed";
            o.Options.WillPayload = "gone"u8.ToArray();
            o.Options.WillDelayInterval = 3600;
        }

        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "delayed", MqttProtocolVersion.V500, Delayed);
        await client.DisposeAsync();
        await Poll.UntilAsync(() => server.MqttMetrics().ClientsConnected == 1, "the drop to be noticed");
        var (back, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "delayed", MqttProtocolVersion.V500, Persistent);
        await using var b = back;
        Assert.True(connAck.ConnAck().SessionPresent);
        Assert.Empty(await watcher.DrainUntilPingAsync());
    }

    [Fact]
    public async Task WillDelay_IsPublishedWhenTheDelayPasses()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await EngineTestServer.StartAsync(s => s.AddSingleton<TimeProvider>(clock));
        var (watcher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "watcher");
        await using var w = watcher;
        await watcher.SubscribeAndWaitAsync("wills/#", 0);
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "delayed", MqttProtocolVersion.V500, o =>
        {
            Persistent(o);
            o.Options.WillTopic = "wills/delayed";
            o.Options.WillPayload = "gone"u8.ToArray();
            o.Options.WillDelayInterval = 30;
        });
        await client.DisposeAsync();
        await Poll.UntilAsync(() => server.MqttMetrics().ClientsConnected == 1, "the drop to be noticed");
        clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal("wills/delayed", (await watcher.ReceiveAsync(MqttPacketType.Publish)).Topic);
    }
}
