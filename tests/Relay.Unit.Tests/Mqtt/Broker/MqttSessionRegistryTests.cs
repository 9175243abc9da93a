using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.Broker;

/// <summary>Attach, takeover, detach, expiry, delayed wills and restore of <see cref="MqttSessionRegistry"/>, on a fake clock.</summary>
public sealed class MqttSessionRegistryTests
{
    [Fact]
    public async Task Attach_NewClientId_CreatesTheSession_WithoutSessionPresent()
    {
        var kit = new BrokerKit();
        var (session, present) = await kit.Sessions.AttachAsync(new FakeSessionConnection(), "d1", BrokerKit.Device("d1"), cleanStart: false, expirySeconds: 60, CancellationToken.None);

        Assert.NotNull(session);
        Assert.False(present);
        Assert.Same(session, kit.Sessions.Find("d1"));
        Assert.Equal("Device:d1", session.Owner);
        Assert.Equal(1, kit.Sessions.Count);
        Assert.Equal(1, kit.Metrics.PersistentSessions);
        Assert.Equal(60u, (await kit.StoredAsync("d1"))!.ExpiryIntervalSeconds);
    }

    [Fact]
    public async Task Attach_SameOwner_TakesTheOldConnectionOver_AndResumes_MQTT_3_1_4_3()
    {
        var kit = new BrokerKit();
        var first = new FakeSessionConnection();
        var session = await kit.ConnectAsync(first, "d1", expirySeconds: 60);
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("devices/d1/#"), CancellationToken.None);

        var second = new FakeSessionConnection();
        var (again, present) = await kit.Sessions.AttachAsync(second, "d1", BrokerKit.Device("d1"), cleanStart: false, expirySeconds: 60, CancellationToken.None);

        Assert.Same(session, again);
        Assert.True(present);
        Assert.Equal(1, first.TakeOvers);
        Assert.Same(second, session.Connection);
        Assert.Equal(["devices/d1/#"], session.SnapshotSubscriptions().Select(static s => s.Filter));

        // The old connection's end no longer touches the session it lost.
        var (detached, _, _) = await kit.Sessions.DetachAsync(first, session, null, 0, CancellationToken.None);
        Assert.False(detached);
        Assert.Same(second, session.Connection);
    }

    [Fact]
    public async Task Attach_AnotherOwnersClientId_IsRefused_AndTouchesNothing()
    {
        var kit = new BrokerKit();
        var owner = new FakeSessionConnection();
        var session = await kit.ConnectAsync(owner, "d1", expirySeconds: 60);
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("devices/d1/#"), CancellationToken.None);

        var (other, present) = await kit.Sessions.AttachAsync(new FakeSessionConnection(), "d1", BrokerKit.Service("telemetry"), cleanStart: true, expirySeconds: 0, CancellationToken.None);

        Assert.Null(other);
        Assert.False(present);
        Assert.Equal(0, owner.TakeOvers);
        Assert.Same(owner, session.Connection);
        Assert.Equal(60u, session.ExpirySeconds);
        Assert.Single(session.SnapshotSubscriptions());
        Assert.Equal(1, kit.Metrics.LimitHits(MqttLimit.SessionOwner));
    }

    [Fact]
    public async Task CleanStart_DiscardsWhatTheSessionHeld_MQTT_3_1_2_4()
    {
        var kit = new BrokerKit();
        var first = new FakeSessionConnection { SendWindow = 0 };
        var session = await kit.ConnectAsync(first, "d1", expirySeconds: 60);
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("a"), CancellationToken.None);
        await kit.Router.PublishAsync(BrokerKit.Message("a"), null, persistRetained: false, CancellationToken.None);
        Assert.Equal(1, session.Pending.Queued);

        var (again, present) = await kit.Sessions.AttachAsync(new FakeSessionConnection(), "d1", BrokerKit.Device("d1"), cleanStart: true, expirySeconds: 60, CancellationToken.None);

        Assert.Same(session, again);
        Assert.False(present);
        Assert.Empty(session.SnapshotSubscriptions());
        Assert.Equal(0, session.Pending.Queued);
        Assert.Equal(0, kit.Metrics.SubscriptionCount);
        Assert.Equal(0, await kit.Router.PublishAsync(BrokerKit.Message("a"), null, persistRetained: false, CancellationToken.None));
        Assert.Empty((await kit.StoredAsync("d1"))!.Subscriptions);
    }

    [Fact]
    public async Task Detach_OfASessionThatIsNotPersistent_EndsIt_AndItsWillIsDueNow_MQTT_4_1_0_1()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1");
        await kit.Router.SubscribeAsync(session, BrokerKit.Subscription("a/#"), CancellationToken.None);

        var (detached, publishWillNow, at) = await kit.Sessions.DetachAsync(connection, session, BrokerKit.Message("wills/d1"), 30, CancellationToken.None);

        Assert.True(detached);
        Assert.True(publishWillNow);
        Assert.Equal(BrokerKit.Start, at);
        Assert.Null(kit.Sessions.Find("d1"));
        Assert.Equal(0, kit.Metrics.SessionsCurrent);
        Assert.Equal(0, kit.Metrics.SubscriptionCount);

        // Late deliveries do not resurrect it.
        Assert.Equal(0, await kit.Router.PublishAsync(BrokerKit.Message("a/b"), null, persistRetained: false, CancellationToken.None));
    }

    [Fact]
    public async Task OfflineSession_ExpiresAfterItsInterval_AndLeavesTheStore_Section_3_1_2_11()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 60);
        await kit.Sessions.DetachAsync(connection, session, null, 0, CancellationToken.None);
        Assert.Equal(BrokerKit.Start, (await kit.StoredAsync("d1"))!.DisconnectedAt);

        kit.Time.Advance(TimeSpan.FromSeconds(59));
        await kit.Sessions.ExpireAsync(CancellationToken.None);
        Assert.Same(session, kit.Sessions.Find("d1"));

        kit.Time.Advance(TimeSpan.FromSeconds(1));
        await kit.Sessions.ExpireAsync(CancellationToken.None);
        Assert.Null(kit.Sessions.Find("d1"));
        Assert.Null(await kit.StoredAsync("d1"));
        Assert.Equal(0, kit.Metrics.PersistentSessions);
    }

    [Fact]
    public async Task DelayedWill_GoesAfterItsDelay_AndAReconnectBeforeItCancelsIt_Section_3_1_3_2_2()
    {
        var kit = new BrokerKit();
        var watcher = new FakeSessionConnection();
        var watching = await kit.ConnectAsync(watcher, "watcher");
        await kit.Router.SubscribeAsync(watching, BrokerKit.Subscription("wills/#"), CancellationToken.None);

        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 600);
        var (_, publishWillNow, _) = await kit.Sessions.DetachAsync(connection, session, BrokerKit.Message("wills/d1"), 30, CancellationToken.None);
        Assert.False(publishWillNow);

        // Back within the delay: the will is cancelled.
        kit.Time.Advance(TimeSpan.FromSeconds(10));
        var back = new FakeSessionConnection();
        await kit.ConnectAsync(back, "d1", expirySeconds: 600);
        kit.Time.Advance(TimeSpan.FromSeconds(60));
        await kit.Sessions.ExpireAsync(CancellationToken.None);
        Assert.Empty(watcher.Published);

        // Gone again, for good this time: the will goes once its delay has passed, not before.
        await kit.Sessions.DetachAsync(back, session, BrokerKit.Message("wills/d1"), 30, CancellationToken.None);
        kit.Time.Advance(TimeSpan.FromSeconds(29));
        await kit.Sessions.ExpireAsync(CancellationToken.None);
        Assert.Empty(watcher.Published);
        kit.Time.Advance(TimeSpan.FromSeconds(1));
        await kit.Sessions.ExpireAsync(CancellationToken.None);
        Assert.Equal(["wills/d1"], watcher.Topics);
        Assert.Same(session, kit.Sessions.Find("d1"));
    }

    [Fact]
    public async Task AWillDelayLongerThanTheSessionExpiry_EndsWithTheSession_Section_3_1_3_2_2()
    {
        var kit = new BrokerKit();
        var watcher = new FakeSessionConnection();
        var watching = await kit.ConnectAsync(watcher, "watcher");
        await kit.Router.SubscribeAsync(watching, BrokerKit.Subscription("wills/#"), CancellationToken.None);

        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 10);
        await kit.Sessions.DetachAsync(connection, session, BrokerKit.Message("wills/d1"), willDelaySeconds: 3600, CancellationToken.None);

        kit.Time.Advance(TimeSpan.FromSeconds(10));
        await kit.Sessions.ExpireAsync(CancellationToken.None);

        Assert.Equal(["wills/d1"], watcher.Topics);
        Assert.Null(kit.Sessions.Find("d1"));
    }

    [Fact]
    public async Task SetExpiryToZeroOnDisconnect_DeletesTheStoredSession_Section_3_14_2_2_2()
    {
        var kit = new BrokerKit();
        var connection = new FakeSessionConnection();
        var session = await kit.ConnectAsync(connection, "d1", expirySeconds: 60);
        Assert.NotNull(await kit.StoredAsync("d1"));

        await kit.Sessions.SetExpiryAsync(session, 0, CancellationToken.None);
        Assert.Null(await kit.StoredAsync("d1"));
        Assert.Equal(0, kit.Metrics.PersistentSessions);

        await kit.Sessions.DetachAsync(connection, session, null, 0, CancellationToken.None);
        Assert.Null(kit.Sessions.Find("d1"));
    }

    [Fact]
    public async Task Restore_BringsBackSubscriptionsAndMessages_AndDropsFiltersOverTheTopicLimits()
    {
        var kit = new BrokerKit(new MqttOptions { MaxTopicLevels = 4 });
        await kit.Store.UpsertSessionAsync("d1", 3600, null, "Device:d1", CancellationToken.None);
        await kit.Store.UpsertSubscriptionAsync("d1", BrokerKit.Subscription("devices/d1/#"), CancellationToken.None);
        await kit.Store.UpsertSubscriptionAsync("d1", BrokerKit.Subscription("a/b/c/d/e/f"), CancellationToken.None);
        var sequences = await kit.Store.EnqueueAsync([("d1", BrokerKit.Message("devices/d1/one")), ("d1", BrokerKit.Message("devices/d1/two"))], CancellationToken.None);
        await kit.Store.MarkSentAsync("d1", sequences[0], 7, false, CancellationToken.None);

        Assert.Equal(1, await kit.Sessions.RestoreAsync(CancellationToken.None));

        var session = kit.Sessions.Find("d1");
        Assert.NotNull(session);
        Assert.Equal("Device:d1", session.Owner);
        Assert.Equal(BrokerKit.Start, session.DisconnectedAt);
        Assert.Equal(["devices/d1/#"], session.SnapshotSubscriptions().Select(static s => s.Filter));
        Assert.Equal(1, session.Pending.Inflight);
        Assert.Equal(1, session.Pending.Queued);
        Assert.Equal(["devices/d1/#"], (await kit.StoredAsync("d1"))!.Subscriptions.Select(static s => s.TopicFilter));
        Assert.Equal(1, kit.Metrics.LimitHits(MqttLimit.TopicLevels));

        // The device comes back: the message in flight again with DUP, then the queued one.
        var connection = new FakeSessionConnection();
        await kit.ConnectAsync(connection, "d1", expirySeconds: 3600);
        Assert.Equal([("devices/d1/one", true), ("devices/d1/two", false)], connection.Published.Select(static p => (p.Outgoing.Message.Topic, p.Dup)));
        Assert.Equal(7, connection.Published[0].Outgoing.PacketId);
    }

    [Fact]
    public async Task AResumedSession_KeepsOnlyTheSubscriptionsItsIdentityMayStillMake()
    {
        var kit = new BrokerKit(authorizer: new OnlyUnder("telemetry/"));
        await kit.Store.UpsertSessionAsync("legacy", 3600, BrokerKit.Start, null, CancellationToken.None);
        await kit.Store.UpsertSubscriptionAsync("legacy", BrokerKit.Subscription("devices/#"), CancellationToken.None);
        await kit.Store.UpsertSubscriptionAsync("legacy", BrokerKit.Subscription("$share/g/telemetry/#"), CancellationToken.None);
        await kit.Sessions.RestoreAsync(CancellationToken.None);

        var (session, present) = await kit.Sessions.AttachAsync(new FakeSessionConnection(), "legacy", BrokerKit.Service("telemetry"), cleanStart: false, expirySeconds: 3600, CancellationToken.None);

        Assert.True(present);
        Assert.Equal(["$share/g/telemetry/#"], session!.SnapshotSubscriptions().Select(static s => s.Filter));
        Assert.Equal(["$share/g/telemetry/#"], (await kit.StoredAsync("legacy"))!.Subscriptions.Select(static s => s.TopicFilter));
        Assert.Equal("Service:telemetry", session.Owner);
    }

    private sealed class OnlyUnder(string prefix) : IMqttAuthorizer
    {
        public bool CanPublish(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic) => topic.StartsWith(prefix, StringComparison.Ordinal);

        public bool CanSubscribe(MqttIdentity identity, string clientId, ReadOnlySpan<char> topicFilter) => topicFilter.StartsWith(prefix, StringComparison.Ordinal);
    }
}
