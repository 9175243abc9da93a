using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.Broker;

/// <summary><see cref="MqttRouter"/>: matching, one copy per session, shared groups, durability before the ack, retained messages.</summary>
public sealed class MqttRouterTests
{
    [Fact]
    public async Task APublish_ReachesEveryMatchingSession_AtTheLowerOfTheTwoQoS_MQTT_3_8_4()
    {
        var kit = new BrokerKit();
        var (a, b, c) = (new FakeSessionConnection(), new FakeSessionConnection(), new FakeSessionConnection());
        await kit.Router.SubscribeAsync(await kit.ConnectAsync(a, "a"), BrokerKit.Subscription("sensors/+/temp", qos: 0), CancellationToken.None);
        await kit.Router.SubscribeAsync(await kit.ConnectAsync(b, "b"), BrokerKit.Subscription("sensors/#", qos: 2), CancellationToken.None);
        await kit.Router.SubscribeAsync(await kit.ConnectAsync(c, "c"), BrokerKit.Subscription("other/#"), CancellationToken.None);

        Assert.Equal(2, await kit.Router.PublishAsync(BrokerKit.Message("sensors/kitchen/temp", qos: 1), "publisher", persistRetained: false, CancellationToken.None));

        Assert.Equal(0, Assert.Single(a.Published).Outgoing.QoS);
        Assert.Equal(1, Assert.Single(b.Published).Outgoing.QoS);
        Assert.Empty(c.Published);
    }

    [Fact]
    public async Task OverlappingSubscriptionsOfOneSession_GetOneCopy_AtTheHighestQoS_WithEveryIdentifier_MQTT5_3_3_4()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "a");
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("x/#", qos: 0, id: 1), CancellationToken.None);
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("x/+", qos: 1, id: 2), CancellationToken.None);

        Assert.Equal(1, await kit.Router.PublishAsync(BrokerKit.Message("x/y", qos: 2), null, persistRetained: false, CancellationToken.None));

        var (outgoing, _) = Assert.Single(connection.Published);
        Assert.Equal(1, outgoing.QoS);
        Assert.Equal([1u, 2u], outgoing.SubscriptionIdentifiers!.Order());
    }

    [Fact]
    public async Task NoLocal_KeepsAClientsOwnPublishesFromIt_MQTT_3_8_3_3()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "a");
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("chat", noLocal: true), CancellationToken.None);

        Assert.Equal(0, await kit.Router.PublishAsync(BrokerKit.Message("chat"), "a", persistRetained: false, CancellationToken.None));
        Assert.Equal(1, await kit.Router.PublishAsync(BrokerKit.Message("chat"), "b", persistRetained: false, CancellationToken.None));
        Assert.Single(connection.Published);
    }

    [Fact]
    public async Task ASharedGroup_GetsEachMessageOnce_PreferringOnlineMembers_MQTT5_4_8_2()
    {
        var kit = new BrokerKit();
        var (one, two) = (new FakeSessionConnection(), new FakeSessionConnection());
        var first = await kit.ConnectAsync(one, "one", expirySeconds: 60);
        var second = await kit.ConnectAsync(two, "two", expirySeconds: 60);
        await kit.Router.SubscribeAsync(first, BrokerKit.Subscription("$share/workers/jobs"), CancellationToken.None);
        await kit.Router.SubscribeAsync(second, BrokerKit.Subscription("$share/workers/jobs"), CancellationToken.None);

        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(1, await kit.Router.PublishAsync(BrokerKit.Message("jobs"), null, persistRetained: false, CancellationToken.None));
        }

        Assert.Equal(2, one.Published.Count);
        Assert.Equal(2, two.Published.Count);

        await kit.Sessions.DetachAsync(two, second, null, 0, CancellationToken.None);
        for (var i = 0; i < 2; i++)
        {
            await kit.Router.PublishAsync(BrokerKit.Message("jobs"), null, persistRetained: false, CancellationToken.None);
        }

        Assert.Equal(4, one.Published.Count);
        Assert.Equal(0, second.Pending.Queued);
    }

    [Fact]
    public async Task CopiesForPersistentSessions_AreStoredWhenPublishReturns()
    {
        var kit = new BrokerKit();
        var online = new FakeSessionConnection();
        var persistent = await kit.ConnectAsync(online, "p", expirySeconds: 60);
        var transient = await kit.ConnectAsync(new FakeSessionConnection(), "t");
        await kit.Router.SubscribeAsync(persistent, BrokerKit.Subscription("a"), CancellationToken.None);
        await kit.Router.SubscribeAsync(transient, BrokerKit.Subscription("a"), CancellationToken.None);
        await kit.Sessions.DetachAsync(online, persistent, null, 0, CancellationToken.None);

        await kit.Router.PublishAsync(BrokerKit.Message("a", payload: "durable"), null, persistRetained: false, CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("a", qos: 0), null, persistRetained: false, CancellationToken.None);

        var stored = Assert.Single((await kit.StoredAsync("p"))!.Messages);
        Assert.Equal("durable", System.Text.Encoding.UTF8.GetString(stored.Message.Payload.Span));
        Assert.Null(await kit.StoredAsync("t"));
    }

    [Fact]
    public async Task RetainedMessages_AreKeptPerTopic_SentWithRetainOnSubscribe_AndClearedByAnEmptyPayload_MQTT_3_3_1_9_10()
    {
        var kit = new BrokerKit();
        await kit.Router.PublishAsync(BrokerKit.Message("status/a", retain: true, payload: "old"), null, persistRetained: true, CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("status/a", retain: true, payload: "new"), null, persistRetained: true, CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("status/b", retain: true), null, persistRetained: true, CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("status/b", retain: true, payload: ""), null, persistRetained: true, CancellationToken.None);
        Assert.Equal(1, kit.Retained.Count);
        Assert.Single(await kit.RetainedStore.LoadAllAsync(CancellationToken.None));

        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "a");
        var (subscription, existed) = await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("status/#"), CancellationToken.None);
        Assert.False(existed);
        await kit.Router.SendRetainedAsync(subscription!, CancellationToken.None);

        var (outgoing, _) = Assert.Single(connection.Published);
        Assert.True(outgoing.Retain);
        Assert.Equal("new", System.Text.Encoding.UTF8.GetString(outgoing.Message.Payload.Span));
    }

    [Fact]
    public async Task RetainedMessages_AreBoundedByMaxRetainedMessages_AndRestoredWithinTheTopicLimits()
    {
        var kit = new BrokerKit(new MqttOptions { MaxRetainedMessages = 1, MaxTopicLevels = 3 });
        await kit.RetainedStore.SetAsync(BrokerKit.Message("a/b/c/d", retain: true), CancellationToken.None);
        await kit.RetainedStore.SetAsync(BrokerKit.Message("kept", retain: true), CancellationToken.None);

        Assert.Equal(2, await kit.Retained.RestoreAsync(CancellationToken.None));
        Assert.Equal(1, kit.Retained.Count);
        Assert.Equal(["kept"], (await kit.RetainedStore.LoadAllAsync(CancellationToken.None)).Select(static m => m.Topic));

        await kit.Router.PublishAsync(BrokerKit.Message("more", retain: true), null, persistRetained: true, CancellationToken.None);
        Assert.Equal(1, kit.Retained.Count);
        Assert.Equal(1, kit.Metrics.Drops(MqttDropReason.RetainedLimit));
        Assert.Empty(kit.Retained.Match("more"));
    }

    [Fact]
    public async Task Subscriptions_AreBoundedPerSession_ButAnExistingFilterMayBeReplaced()
    {
        var kit = new BrokerKit(new MqttOptions { MaxSubscriptionsPerSession = 1 });
        var session = await kit.ConnectAsync(new FakeSessionConnection(), "a", expirySeconds: 60);

        Assert.NotNull((await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("x", qos: 0), CancellationToken.None)).Subscription);
        var (refused, _) = await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("y"), CancellationToken.None);
        Assert.Null(refused);
        Assert.Equal(1, kit.Metrics.LimitHits(MqttLimit.SubscriptionsPerSession));

        var (replaced, existed) = await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("x", qos: 2), CancellationToken.None);
        Assert.NotNull(replaced);
        Assert.True(existed);
        Assert.Equal(1, kit.Metrics.SubscriptionCount);
        Assert.Equal(2, Assert.Single((await kit.StoredAsync("a"))!.Subscriptions).MaximumQoS);

        Assert.True(await kit.Router.UnsubscribeAsync(session, "x", CancellationToken.None));
        Assert.False(await kit.Router.UnsubscribeAsync(session, "x", CancellationToken.None));
        Assert.Empty((await kit.StoredAsync("a"))!.Subscriptions);
        Assert.Equal(0, await kit.Router.PublishAsync(BrokerKit.Message("x"), null, persistRetained: false, CancellationToken.None));
    }
}
