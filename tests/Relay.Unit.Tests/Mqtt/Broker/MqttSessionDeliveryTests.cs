using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.Broker;

/// <summary>The delivery pump of <see cref="MqttSession"/>: send window, queue, drop policy, resend, acknowledgements.</summary>
public sealed class MqttSessionDeliveryTests
{
    private static MqttOutgoing Outgoing(string topic, byte qos = 1, DateTimeOffset? expiresAt = null) =>
        new(BrokerKit.Message(topic, qos, expiresAt: expiresAt), qos, false, null);

    [Fact]
    public async Task NothingGoesToAConnectionBeforeItsConnAck_MQTT_3_2_0_1()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var (session, _) = await kit.Sessions.AttachAsync(connection, "d1", BrokerKit.Device("d1"), false, 60, CancellationToken.None);

        session!.Offer(Outgoing("qos1"));
        session.Offer(Outgoing("qos0", qos: 0));
        Assert.Empty(connection.Published);
        Assert.Equal(1, session.Pending.Queued);
        Assert.Equal(1, kit.Metrics.Drops(MqttDropReason.OfflineQoS0));

        session.Resume(connection);
        Assert.Equal(["qos1"], connection.Topics);
        Assert.Equal(0, session.Pending.Queued);
    }

    [Fact]
    public async Task TheSendWindow_BoundsMessagesInFlight_AndEachAckLetsTheNextOneGo_MQTT_4_9()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection { SendWindow = 2 };
        var session = await kit.ConnectAsync(connection, "d1");
        for (var i = 0; i < 5; i++)
        {
            session.Offer(Outgoing("m" + i));
        }

        Assert.Equal(["m0", "m1"], connection.Topics);
        Assert.Equal(2, session.Pending.Inflight);
        Assert.Equal(3, session.Pending.Queued);
        var ids = connection.Published.Select(static p => p.Outgoing.PacketId).ToArray();
        Assert.DoesNotContain((ushort)0, ids);
        Assert.Equal(ids.Length, ids.Distinct().Count());

        Assert.NotNull(session.AcknowledgePubAck(ids[0]));
        Assert.Equal(["m0", "m1", "m2"], connection.Topics);
        Assert.Null(session.AcknowledgePubAck(ids[0]));
        Assert.Equal(2, session.Pending.Inflight);
        Assert.Equal(2, session.Pending.Queued);
    }

    [Theory]
    [InlineData(MqttQueueDropPolicy.DropOldest, "m1 m2")]
    [InlineData(MqttQueueDropPolicy.DropNewest, "m0 m1")]
    public async Task AFullQueue_DropsByThePolicy_AndCountsEachDrop(MqttQueueDropPolicy policy, string kept)
    {
        var kit = new BrokerKit(new MqttOptions { MaxQueuedMessages = 2, QueueDropPolicy = policy });
        var connection = new FakeSessionConnection { SendWindow = 0 };
        var session = await kit.ConnectAsync(connection, "d1");
        session.Offer(Outgoing("m0"));
        session.Offer(Outgoing("m1"));
        session.Offer(Outgoing("m2"));

        Assert.Equal(2, session.Pending.Queued);
        Assert.Equal(1, kit.Metrics.Drops(MqttDropReason.QueueFull));
        Assert.Equal(1, kit.Metrics.LimitHits(MqttLimit.QueuedMessages));

        connection.SendWindow = 10;
        session.Resume(connection);
        Assert.Equal(kept, string.Join(' ', connection.Topics));
    }

    [Fact]
    public async Task QoS0_ToAnOfflineSession_IsDropped_AndQoS1_IsQueuedForItsReturn()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 60);
        await kit.Sessions.DetachAsync(connection, session, null, 0, CancellationToken.None);

        session.Offer(Outgoing("q0", qos: 0));
        session.Offer(Outgoing("q1"));
        Assert.Equal(1, kit.Metrics.Drops(MqttDropReason.OfflineQoS0));
        Assert.Equal(1, session.Pending.Queued);

        var back = new FakeSessionConnection();
        await kit.ConnectAsync(back, "d1", expirySeconds: 60);
        Assert.Equal(["q1"], back.Topics);
    }

    [Fact]
    public async Task AnExpiredMessage_IsNotDelivered_MQTT_5_3_3_2_3_3()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection { SendWindow = 0 };
        var session = await kit.ConnectAsync(connection, "d1");
        session.Offer(Outgoing("soon", expiresAt: BrokerKit.Start.AddSeconds(10)));
        session.Offer(Outgoing("later", expiresAt: BrokerKit.Start.AddSeconds(100)));

        kit.Time.Advance(TimeSpan.FromSeconds(10));
        connection.SendWindow = 10;
        session.Resume(connection);

        Assert.Equal(["later"], connection.Topics);
        Assert.Equal(1, kit.Metrics.Drops(MqttDropReason.Expired));
    }

    [Fact]
    public async Task AfterAReconnect_UnacknowledgedPublishesGoAgainWithDup_AndReleasedOnesAsPubRel_MQTT_4_4_0_1()
    {
        var kit = new BrokerKit();
        var first = new FakeSessionConnection();
        var session = await kit.ConnectAsync(first, "d1", expirySeconds: 60);
        session.Offer(Outgoing("one", qos: 2));
        session.Offer(Outgoing("two", qos: 1));
        var one = first.Published[0].Outgoing.PacketId;
        Assert.Equal(MqttPubRecOutcome.Release, session.AcknowledgePubRec(one, failed: false));
        await kit.Sessions.DetachAsync(first, session, null, 0, CancellationToken.None);

        var second = new FakeSessionConnection();
        await kit.ConnectAsync(second, "d1", expirySeconds: 60);

        Assert.Equal([one], second.PubRels);
        Assert.Equal([("two", true)], second.Published.Select(static p => (p.Outgoing.Message.Topic, p.Dup)));
        Assert.NotNull(session.AcknowledgePubComp(one));
        Assert.Equal(1, session.Pending.Inflight);
    }

    [Fact]
    public async Task PubRec_WithAFailureCode_EndsTheExchange_AndAnUnknownIdIsSaidSo_MQTT_4_3_3()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1");
        session.Offer(Outgoing("one", qos: 2));
        var id = connection.Published[0].Outgoing.PacketId;

        Assert.Equal(MqttPubRecOutcome.UnknownPacketId, session.AcknowledgePubRec((ushort)(id + 1), failed: false));
        Assert.Null(session.AcknowledgePubComp(id));
        Assert.Equal(MqttPubRecOutcome.Ended, session.AcknowledgePubRec(id, failed: true));
        Assert.Equal(0, session.Pending.Inflight);
    }

    [Fact]
    public async Task APersistentSessionsStoredCopy_IsMarkedSentReleasedAndRemoved_AsTheMessageMoves()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 60);
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("a/#", qos: 2), CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("a/one", qos: 2), null, persistRetained: false, CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("a/two", qos: 1), null, persistRetained: false, CancellationToken.None);
        var one = connection.Published[0].Outgoing.PacketId;
        var two = connection.Published[1].Outgoing.PacketId;
        Assert.Equal(MqttPubRecOutcome.Release, session.AcknowledgePubRec(one, failed: false));
        Assert.NotNull(session.AcknowledgePubAck(two));

        await kit.FlushStoreWritesAsync();
        var stored = Assert.Single((await kit.StoredAsync("d1"))!.Messages);
        Assert.Equal(("a/one", one, true), (stored.Message.Topic, stored.PacketId, stored.Released));
    }

    [Fact]
    public async Task AMessageTooLargeForTheClient_LeavesTheSessionOnResume_MQTT_3_1_2_25()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection { Result = MqttSendResult.Closed };
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 60);
        session.Offer(Outgoing("big"));
        Assert.Equal(1, session.Pending.Inflight);

        var small = new FakeSessionConnection { Result = MqttSendResult.Dropped };
        await kit.ConnectAsync(small, "d1", expirySeconds: 60);
        Assert.Equal(0, session.Pending.Inflight);
    }

    [Fact]
    public async Task TaggedMessages_GoOnlyToTheDevicesOwnSubscribedSession_AndLeaveWithTheConnection()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 60);
        var command = BrokerKit.Message("devices/d1/commands");
        Assert.False(session.TryDeliverTagged(command, "tag"));

        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("devices/d1/#", id: 9), CancellationToken.None);
        Assert.True(session.TryDeliverTagged(command, "tag"));
        var (sent, _) = Assert.Single(connection.Published);
        Assert.Equal("tag", sent.Tag);
        Assert.Equal([9u], sent.SubscriptionIdentifiers!);

        // Another principal holding the id gets nothing.
        var service = new FakeSessionConnection();
        var other = await kit.ConnectAsync(service, "d2", expirySeconds: 60, identity: BrokerKit.Service("backend"));
        await kit.Router.SubscribeAsync(other, BrokerKit.Subscription("devices/d2/#"), CancellationToken.None);
        Assert.False(other.TryDeliverTagged(BrokerKit.Message("devices/d2/commands"), "tag"));

        // The publisher redelivers tagged messages itself: they do not wait in an offline session.
        await kit.Sessions.DetachAsync(connection, session, null, 0, CancellationToken.None);
        Assert.Equal(0, session.Pending.Inflight);
        Assert.False(session.TryDeliverTagged(command, "tag"));
    }

    [Fact]
    public void InboundQoS2_IsDeliveredOnceUntilPubRel_AndBoundedByReceiveMaximum_MQTT_4_3_3_10()
    {
        var session = BrokerKit.Session("d1");
        Assert.Equal(MqttInboundQoS2.New, session.CheckInboundQoS2(1, maximum: 2));
        session.HoldInboundQoS2(1);
        Assert.Equal(MqttInboundQoS2.Duplicate, session.CheckInboundQoS2(1, maximum: 2));
        session.HoldInboundQoS2(2);
        Assert.Equal(MqttInboundQoS2.OverLimit, session.CheckInboundQoS2(3, maximum: 2));

        Assert.True(session.ReleaseInboundQoS2(1));
        Assert.False(session.ReleaseInboundQoS2(1));
        Assert.Equal(MqttInboundQoS2.New, session.CheckInboundQoS2(1, maximum: 2));
    }

    [Fact]
    public async Task AFullStoreWriter_CountsTheWriteItLoses()
    {
        var kit = new BrokerKit();
        for (var i = 0; i <= 65536; i++)
        {
            kit.StoreWriter.Enqueue(new StoreOp("d1", i + 1, 0, false, Remove: true));
        }

        Assert.Equal(1, kit.StoreWriter.Lost);
        await kit.FlushStoreWritesAsync();
    }
}
