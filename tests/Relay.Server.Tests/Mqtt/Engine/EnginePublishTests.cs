using System.Buffers;
using System.Text;
using Relay.Server.Mqtt;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EnginePublishTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task QoS0_IsDelivered(MqttProtocolVersion version)
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub", version);
        await using var s = subscriber;
        Assert.Equal([0], await subscriber.SubscribeAndWaitAsync("a/b", 0));
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub", version);
        await using var p = publisher;
        await publisher.PublishAsync("a/b", "hello");
        var message = await subscriber.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("a/b", message.Topic);
        Assert.Equal("hello", message.PayloadText);
        Assert.Equal(0, message.Publish().QoS);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task QoS1_PubAckToPublisher_AndDeliveredAtGrantedQoS_MQTT_4_3_2(MqttProtocolVersion version)
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub", version);
        await using var s = subscriber;
        Assert.Equal([1], await subscriber.SubscribeAndWaitAsync("a/b", 1));
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub", version);
        await using var p = publisher;
        await publisher.PublishAsync("a/b", "one", qos: 1, packetId: 42);
        var ack = (await publisher.ReceiveAsync()).Ack();
        Assert.Equal(MqttPacketType.PubAck, ack.Type);
        Assert.Equal((ushort)42, ack.PacketId);
        var message = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.Equal(1, message.QoS);
        Assert.NotEqual(0, message.PacketId);
        await subscriber.AckAsync(MqttPacketType.PubAck, message.PacketId);
        Assert.Empty(await subscriber.DrainUntilPingAsync());
    }

    [Fact]
    public async Task QoS2_Inbound_DuplicateBeforePubRel_IsDeliveredOnce_MQTT_4_3_3()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("q2", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("q2", "once", qos: 2, packetId: 7);
        Assert.Equal(MqttPacketType.PubRec, (await publisher.ReceiveAsync()).Type);

        // [MQTT-4.3.3-10]: the same packet id again (DUP) before PUBREL must not be delivered again.
        await publisher.PublishAsync("q2", "once", qos: 2, packetId: 7, dup: true);
        Assert.Equal(MqttPacketType.PubRec, (await publisher.ReceiveAsync()).Type);
        await publisher.AckAsync(MqttPacketType.PubRel, 7);
        var comp = (await publisher.ReceiveAsync()).Ack();
        Assert.Equal(MqttPacketType.PubComp, comp.Type);
        Assert.Equal(MqttReasonCode.Success, comp.ReasonCode);

        var received = await subscriber.DrainUntilPingAsync();
        Assert.Equal("once", Assert.Single(received).PayloadText);
    }

    [Fact]
    public async Task QoS2_Outbound_FullFlow_PubRecPubRelPubComp_MQTT_4_3_3()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("q2", 2);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("q2", "x", qos: 2);
        var publish = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.Equal(2, publish.QoS);
        await subscriber.AckAsync(MqttPacketType.PubRec, publish.PacketId);
        var rel = (await subscriber.ReceiveAsync()).Ack();
        Assert.Equal(MqttPacketType.PubRel, rel.Type);
        Assert.Equal(publish.PacketId, rel.PacketId);
        await subscriber.AckAsync(MqttPacketType.PubComp, publish.PacketId);
        Assert.Empty(await subscriber.DrainUntilPingAsync());
    }

    [Fact]
    public async Task Wildcards_PlusAndHash_Match_MQTT_4_7_1()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("sport/+/score", 0);
        await subscriber.SubscribeAndWaitAsync("news/#", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        foreach (var topic in new[] { "sport/tennis/score", "sport/tennis/player", "news", "news/a/b", "other" })
        {
            await publisher.PublishAsync(topic, topic, qos: 1);
            await publisher.ReceiveAsync(MqttPacketType.PubAck);
        }

        var topics = (await subscriber.DrainUntilPingAsync()).Select(static m => m.Topic).ToArray();
        Assert.Equal(["sport/tennis/score", "news", "news/a/b"], topics);
    }

    [Fact]
    public async Task HashDoesNotMatchDollarTopics_AndClientsCannotPublishThere_MQTT_4_7_2_1()
    {
        // Without rules an anonymous '#' would reach into devices/#, which the lab default refuses.
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:Acl:0:Permission=allow", "Relay:Mqtt:Acl:0:Topic=#");
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("#", 0);
        await subscriber.SubscribeAndWaitAsync("$x/#", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("$x/y", "no", qos: 1);
        var ack = (await publisher.ReceiveAsync()).Ack();
        Assert.Equal(MqttReasonCode.TopicNameInvalid, ack.ReasonCode);
        Assert.Empty(await subscriber.DrainUntilPingAsync());
        Assert.Equal(1, server.MqttMetrics().Drops(MqttDropReason.DollarTopic));
    }

    [Fact]
    public async Task ReasonStrings_AreLeftOutWhenProblemInformationIsNotRequested_MQTT_3_1_2_29()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (chatty, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "chatty");
        await using var c = chatty;
        await chatty.PublishAsync("$no", "x", qos: 1);
        Assert.True((await chatty.ReceiveAsync()).Ack().Properties.HasReasonString);

        await using var quiet = await MqttTestClient.OpenAsync(server.MqttPort);

        // v5 CONNECT by hand: the codec's client writer has no Request Problem Information (0x17) field.
        await quiet.SendRawAsync(new byte[] { 0x10, 16, 0, 4, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 5, 0x02, 0, 60, 2, 0x17, 0, 0, 1, (byte)'q' });
        Assert.Equal(0, (await quiet.ReceiveAsync()).ConnAck().ReasonCode);
        await quiet.PublishAsync("$no", "x", qos: 1);
        var ack = (await quiet.ReceiveAsync()).Ack();
        Assert.Equal(MqttReasonCode.TopicNameInvalid, ack.ReasonCode);
        Assert.False(ack.Properties.HasReasonString);
    }

    [Fact]
    public async Task Unsubscribe_StopsDelivery_AndUnknownFilterGets0x11()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "c");
        await using var c = client;
        await client.SubscribeAndWaitAsync("t", 0);
        await client.SendAsync(w => MqttPacketWriter.WriteUnsubscribe(w, client.Version, 5, new[] { "t", "never" }));
        var codes = (await client.ReceiveAsync(MqttPacketType.UnsubAck)).UnsubAckCodes();
        Assert.Equal([(byte)MqttReasonCode.Success, (byte)MqttReasonCode.NoSubscriptionExisted], codes);
        await client.PublishAsync("t", "x", qos: 1);
        await client.ReceiveAsync(MqttPacketType.PubAck);
        Assert.Empty(await client.DrainUntilPingAsync());
    }

    [Fact]
    public async Task Retained_NewSubscriberGetsItWithRetainSet_EmptyPayloadDeletes_MQTT_3_3_1_9_And_10()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("r/1", "kept", qos: 1, retain: true);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);

        var (first, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "s1");
        await using var f = first;
        await first.SubscribeAndWaitAsync("r/#", 1);
        var retained = await first.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("kept", retained.PayloadText);
        Assert.True(retained.Publish().Retain);
        await first.AckAsync(MqttPacketType.PubAck, retained.Publish().PacketId);

        // Live forwarding with Retain As Published = 0 clears RETAIN [MQTT-3.3.1-12].
        await publisher.PublishAsync("r/1", string.Empty, qos: 1, retain: true);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);
        var live = (await first.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.False(live.Retain);

        var (second, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "s2");
        await using var s = second;
        await second.SubscribeAndWaitAsync("r/#", 1);
        Assert.Empty(await second.DrainUntilPingAsync());
    }

    [Fact]
    public async Task RetainHandling2_SendsNoRetained_RetainAsPublished_KeepsFlag()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("r", "kept", qos: 1, retain: true);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "s");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("r", 0, retainHandling: 2, retainAsPublished: true);
        Assert.Empty(await subscriber.DrainUntilPingAsync());
        await publisher.PublishAsync("r", "again", retain: true);
        var live = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.True(live.Retain, "[MQTT-3.3.1-13]: Retain As Published keeps the publisher's RETAIN flag");
    }

    [Fact]
    public async Task RetainHandling1_SendsRetainedOnlyForANewSubscription_AndSharedSubscriptionsGetNone()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("r", "kept", qos: 1, retain: true);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);

        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "s");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("r", 0, retainHandling: 1);
        Assert.Equal("kept", Assert.Single(await subscriber.DrainUntilPingAsync()).PayloadText);
        await subscriber.SubscribeAndWaitAsync("r", 0, retainHandling: 1);
        Assert.Empty(await subscriber.DrainUntilPingAsync());

        // §4.8.2: retained messages are not sent for a shared subscription.
        await subscriber.SubscribeAndWaitAsync("$share/g/r", 0);
        Assert.Empty(await subscriber.DrainUntilPingAsync());
    }

    [Fact]
    public async Task MaxRetainedMessages_RefusesNewTopics_WithQuotaExceeded()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxRetainedMessages=1");
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("r/1", "first", qos: 1, retain: true);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);
        await publisher.PublishAsync("r/2", "second", qos: 1, retain: true);
        Assert.Equal(MqttReasonCode.QuotaExceeded, (await publisher.ReceiveAsync(MqttPacketType.PubAck)).Ack().ReasonCode);
        await publisher.PublishAsync("r/1", "replaced", qos: 1, retain: true);
        await publisher.ReceiveAsync(MqttPacketType.PubAck);

        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "s");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("r/#", 0);
        Assert.Equal("replaced", Assert.Single(await subscriber.DrainUntilPingAsync()).PayloadText);
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.RetainedMessages));
        Assert.Equal(1, server.MqttMetrics().RetainedCount);
    }

    [Fact]
    public async Task V5Properties_AreForwardedUnchanged_MQTT_3_3_2_16_To_20()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("p", 0, subscriptionId: 77);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        var properties = new MqttPublishProperties
        {
            PayloadFormatIndicator = 1,
            ContentType = "text/plain",
            ResponseTopic = "reply/here",
            CorrelationData = new byte[] { 1, 2, 3 },
            HasCorrelationData = true,
            UserProperties = [new("k", "v"), new("k", "v2")],
            MessageExpiryInterval = 600,
        };
        await publisher.PublishAsync(Encoding.UTF8.GetBytes("p"), Encoding.UTF8.GetBytes("body"), properties: properties);
        var received = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish().Properties;
        Assert.Equal((byte)1, received.PayloadFormatIndicator);
        Assert.Equal("text/plain", Encoding.UTF8.GetString(received.ContentType));
        Assert.Equal("reply/here", Encoding.UTF8.GetString(received.ResponseTopic));
        Assert.Equal(new byte[] { 1, 2, 3 }, received.CorrelationData.ToArray());
        Assert.Equal(2, received.UserPropertyCount);
        var pairs = new List<string>();
        foreach (var (name, value) in received.GetUserProperties())
        {
            pairs.Add(Encoding.UTF8.GetString(name) + "=" + Encoding.UTF8.GetString(value));
        }

        Assert.Equal(["k=v", "k=v2"], pairs);
        Assert.Equal(77u, received.SubscriptionIdentifier);
        Assert.InRange(received.MessageExpiryInterval!.Value, 1u, 600u);
    }

    [Fact]
    public async Task PayloadFormatUtf8WithInvalidBytes_GetsPubAck0x99()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync(Encoding.UTF8.GetBytes("t"), new byte[] { 0xC3, 0x28 }, qos: 1, properties: new MqttPublishProperties { PayloadFormatIndicator = 1 });
        Assert.Equal(MqttReasonCode.PayloadFormatInvalid, (await publisher.ReceiveAsync()).Ack().ReasonCode);
    }

    [Fact]
    public async Task NoLocal_DoesNotEchoOwnMessages_MQTT_3_8_3_3()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "self");
        await using var c = client;
        await client.SubscribeAndWaitAsync("echo", 0, noLocal: true);
        await client.PublishAsync("echo", "mine", qos: 1);
        Assert.Equal(MqttPacketType.PubAck, (await client.ReceiveAsync()).Type);
        Assert.Empty(await client.DrainUntilPingAsync());
    }

    [Fact]
    public async Task SharedSubscription_EachMessageGoesToOneMember_RoundRobin_MQTT_4_8_2()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (a, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "a");
        await using var aa = a;
        var (b, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "b");
        await using var bb = b;
        await a.SubscribeAndWaitAsync("$share/g/jobs/#", 0);
        await b.SubscribeAndWaitAsync("$share/g/jobs/#", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        for (var i = 0; i < 4; i++)
        {
            await publisher.PublishAsync("jobs/x", i.ToString(System.Globalization.CultureInfo.InvariantCulture), qos: 1);
            await publisher.ReceiveAsync(MqttPacketType.PubAck);
        }

        var toA = await a.DrainUntilPingAsync();
        var toB = await b.DrainUntilPingAsync();
        Assert.Equal(2, toA.Count);
        Assert.Equal(2, toB.Count);
        Assert.Equal(["0", "1", "2", "3"], toA.Concat(toB).Select(static m => m.PayloadText).Order().ToArray());
    }

    [Fact]
    public async Task TopicAlias_Inbound_ResolvesAndOutOfRangeIsDisconnect0x94()
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:TopicAliasMaximum=2");
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("long/topic/name", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync(Encoding.UTF8.GetBytes("long/topic/name"), "1"u8.ToArray(), properties: new MqttPublishProperties { TopicAlias = 1 });
        await publisher.PublishAsync(Array.Empty<byte>(), "2"u8.ToArray(), properties: new MqttPublishProperties { TopicAlias = 1 });
        var first = await subscriber.ReceiveAsync(MqttPacketType.Publish);
        var second = await subscriber.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("long/topic/name", first.Topic);
        Assert.Equal("long/topic/name", second.Topic);
        Assert.Equal("2", second.PayloadText);

        await publisher.PublishAsync(Encoding.UTF8.GetBytes("x"), "3"u8.ToArray(), properties: new MqttPublishProperties { TopicAlias = 3 });
        var end = await publisher.ReadUntilClosedAsync();
        Assert.Equal(MqttReasonCode.TopicAliasInvalid, Assert.Single(end).Disconnect().ReasonCode);
    }

    [Fact]
    public async Task TopicAlias_Outbound_UsesAliasUpToClientsMaximum()
    {
        await using var server = await EngineTestServer.StartAsync();
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub", MqttProtocolVersion.V500, o => o.Options.TopicAliasMaximum = 4);
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("aliased/topic", 0);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("aliased/topic", "1");
        await publisher.PublishAsync("aliased/topic", "2");
        var first = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish();
        var second = (await subscriber.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.Equal("aliased/topic", Encoding.UTF8.GetString(first.Topic));
        Assert.NotNull(first.Properties.TopicAlias);
        Assert.True(second.Topic.IsEmpty);
        Assert.Equal(first.Properties.TopicAlias, second.Properties.TopicAlias);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task DeviceOutsideItsTree_IsDeniedPublishAndSubscribe(MqttProtocolVersion version)
    {
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:AllowAnonymous=false", "Relay:Mqtt:Devices:0:Id=d1", "Relay:Mqtt:Devices:0:Secret=pw", "Relay:Mqtt:Devices:1:Id=d2", "Relay:Mqtt:Devices:1:Secret=pw");
        void Credentials(MqttConnectOptionsBuilder o, string id)
        {
            o.Options.Username = id;
            o.Options.Password = "pw"u8.ToArray();
            o.Options.HasPassword = true;
        }

        var (d2, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "d2", version, o => Credentials(o, "d2"));
        await using var dd2 = d2;
        Assert.Equal([1], await d2.SubscribeAndWaitAsync("devices/d2/#", 1));
        var (d1, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "d1", version, o => Credentials(o, "d1"));
        await using var dd1 = d1;
        var denied = await d1.SubscribeAndWaitAsync("devices/d2/#", 1);
        Assert.Equal(version == MqttProtocolVersion.V500 ? (byte)MqttReasonCode.NotAuthorized : (byte)0x80, Assert.Single(denied));

        await d1.PublishAsync("devices/d2/cmd", "nope", qos: 1);
        var ack = (await d1.ReceiveAsync()).Ack();
        Assert.Equal(version == MqttProtocolVersion.V500 ? MqttReasonCode.NotAuthorized : MqttReasonCode.Success, ack.ReasonCode);
        Assert.Empty(await d2.DrainUntilPingAsync());
        Assert.Equal(1, server.MqttMetrics().Drops(MqttDropReason.NotAuthorized));
    }
}
