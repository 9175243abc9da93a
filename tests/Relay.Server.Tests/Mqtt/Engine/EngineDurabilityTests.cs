using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.InMemory;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineDurabilityTests
{
    private static void Persistent(MqttConnectOptionsBuilder o)
    {
        o.Options.CleanStart = false;
        o.Options.SessionExpiryInterval = 3600;
    }

    [Fact]
    public async Task PubAck_IsSentOnlyAfterTheStoreHasTheMessage()
    {
        var store = new GatedSessionStore();
        await using var server = await EngineTestServer.StartAsync(s => s.AddSingleton<IMqttSessionStore>(store));
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "durable", MqttProtocolVersion.V500, Persistent);
        await subscriber.SubscribeAndWaitAsync("q", 1);
        await subscriber.DisconnectAsync();
        await subscriber.ReadUntilClosedAsync();
        await subscriber.DisposeAsync();

        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        store.Close();
        await publisher.PublishAsync("q", "must-survive", qos: 1);
        await store.Entered.Task.WaitAsync(TimeSpan.FromSeconds(15));

        // A round trip on another connection: a PUBACK sent before the store call would be here by now.
        var (other, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "other");
        await using var o = other;
        Assert.Empty(await other.DrainUntilPingAsync());
        Assert.Equal(0, publisher.BytesAvailable);

        store.Open();
        Assert.Equal(MqttPacketType.PubAck, (await publisher.ReceiveAsync()).Type);
        var persisted = Assert.Single(await store.LoadAllAsync(CancellationToken.None), static s => s.ClientId == "durable");
        Assert.Equal("must-survive", Encoding.UTF8.GetString(Assert.Single(persisted.Messages).Message.Payload.Span));
    }

    [Fact]
    public async Task Start_RestoresSessionsSubscriptionsInflightAndRetained_FromTheStores()
    {
        var sessions = new InMemorySessionStore();
        await sessions.UpsertSessionAsync("restored", 3600, DateTimeOffset.UtcNow, null, CancellationToken.None);
        await sessions.UpsertSubscriptionAsync("restored", new PersistedSubscription("live/#", 1, false, false, 0, 0), CancellationToken.None);
        var sequences = await sessions.EnqueueAsync([("restored", new StoredMessage("live/a", "in-flight"u8.ToArray(), 1, false, null, null)), ("restored", new StoredMessage("live/b", "queued"u8.ToArray(), 1, false, null, null))], CancellationToken.None);
        await sessions.MarkSentAsync("restored", sequences[0], 5, false, CancellationToken.None);
        var retained = new InMemoryRetainedStore();
        await retained.SetAsync(new StoredMessage("state/x", "retained-before-restart"u8.ToArray(), 0, true, null, null), CancellationToken.None);

        await using var server = await EngineTestServer.StartAsync(s =>
        {
            s.AddSingleton<IMqttSessionStore>(sessions);
            s.AddSingleton<IMqttRetainedStore>(retained);
        });
        Assert.Equal(1, server.MqttMetrics().PersistentSessions);

        var (client, connAck) = await MqttTestClient.ConnectAsync(server.MqttPort, "restored", MqttProtocolVersion.V500, Persistent);
        await using var c = client;
        Assert.True(connAck.ConnAck().SessionPresent);

        // [MQTT-4.4.0-1]: the message that was in flight comes again with DUP and its packet id, then the queued one.
        var resent = (await client.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.True(resent.Dup);
        Assert.Equal((ushort)5, resent.PacketId);
        var queued = await client.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("queued", queued.PayloadText);
        await client.AckAsync(MqttPacketType.PubAck, 5);
        await client.AckAsync(MqttPacketType.PubAck, queued.Publish().PacketId);

        // The restored subscription routes new messages.
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;
        await publisher.PublishAsync("live/c", "after-restart");
        Assert.Equal("after-restart", (await client.ReceiveAsync(MqttPacketType.Publish)).PayloadText);

        await client.SubscribeAndWaitAsync("state/#", 0);
        Assert.Equal("retained-before-restart", (await client.ReceiveAsync(MqttPacketType.Publish)).PayloadText);
        await Poll.UntilAsync(() => sessions.LoadAllAsync(CancellationToken.None).Result.Single().Messages.Count == 0, "acknowledged messages to leave the store");
    }

    [Fact]
    public async Task Restart_WithTheSameStores_KeepsSubscriptionsQueuedMessagesAndRetained()
    {
        var sessions = new InMemorySessionStore();
        var retained = new InMemoryRetainedStore();
        void Stores(IServiceCollection s)
        {
            s.AddSingleton<IMqttSessionStore>(sessions);
            s.AddSingleton<IMqttRetainedStore>(retained);
        }

        await using (var first = await EngineTestServer.StartAsync(Stores))
        {
            var (subscriber, _) = await MqttTestClient.ConnectAsync(first.MqttPort, "durable", MqttProtocolVersion.V311, Persistent);
            await subscriber.SubscribeAndWaitAsync("q/#", 1);
            await subscriber.DisconnectAsync();
            await subscriber.ReadUntilClosedAsync();
            await subscriber.DisposeAsync();

            var (publisher, _) = await MqttTestClient.ConnectAsync(first.MqttPort, "pub", MqttProtocolVersion.V311);
            await using var p = publisher;
            await publisher.PublishAsync("q/1", "queued-before-restart", qos: 1);
            await publisher.ReceiveAsync(MqttPacketType.PubAck);
            await publisher.PublishAsync("state", "retained-before-restart", qos: 1, retain: true);
            await publisher.ReceiveAsync(MqttPacketType.PubAck);
        }

        await using var second = await EngineTestServer.StartAsync(Stores);
        var (again, connAck) = await MqttTestClient.ConnectAsync(second.MqttPort, "durable", MqttProtocolVersion.V311, Persistent);
        await using var a = again;
        Assert.True(connAck.ConnAck().SessionPresent);
        var message = await again.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("queued-before-restart", message.PayloadText);
        await again.AckAsync(MqttPacketType.PubAck, message.Publish().PacketId);
        await again.SubscribeAndWaitAsync("state", 0);
        Assert.Equal("retained-before-restart", (await again.ReceiveAsync(MqttPacketType.Publish)).PayloadText);
    }

    /// <summary>The in-memory store with a gate in front of EnqueueAsync, so a test can hold a publish at the store.</summary>
    private sealed class GatedSessionStore : IMqttSessionStore
    {
        private readonly InMemorySessionStore _inner = new();
        private TaskCompletionSource _gate = CompletedGate();

        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Close() => _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Open() => _gate.TrySetResult();

        public async ValueTask<long[]> EnqueueAsync(IReadOnlyList<(string ClientId, StoredMessage Message)> messages, CancellationToken cancellationToken)
        {
            Entered.TrySetResult();
            await _gate.Task;
            return await _inner.EnqueueAsync(messages, cancellationToken);
        }

        public ValueTask<IReadOnlyList<PersistedSession>> LoadAllAsync(CancellationToken cancellationToken) => _inner.LoadAllAsync(cancellationToken);

        public ValueTask UpsertSessionAsync(string clientId, uint expiryIntervalSeconds, DateTimeOffset? disconnectedAt, string? owner, CancellationToken cancellationToken) => _inner.UpsertSessionAsync(clientId, expiryIntervalSeconds, disconnectedAt, owner, cancellationToken);

        public ValueTask DeleteSessionAsync(string clientId, CancellationToken cancellationToken) => _inner.DeleteSessionAsync(clientId, cancellationToken);

        public ValueTask UpsertSubscriptionAsync(string clientId, PersistedSubscription subscription, CancellationToken cancellationToken) => _inner.UpsertSubscriptionAsync(clientId, subscription, cancellationToken);

        public ValueTask RemoveSubscriptionAsync(string clientId, string topicFilter, CancellationToken cancellationToken) => _inner.RemoveSubscriptionAsync(clientId, topicFilter, cancellationToken);

        public ValueTask MarkSentAsync(string clientId, long sequence, ushort packetId, bool released, CancellationToken cancellationToken) => _inner.MarkSentAsync(clientId, sequence, packetId, released, cancellationToken);

        public ValueTask RemoveMessageAsync(string clientId, long sequence, CancellationToken cancellationToken) => _inner.RemoveMessageAsync(clientId, sequence, cancellationToken);

        private static TaskCompletionSource CompletedGate()
        {
            var gate = new TaskCompletionSource();
            gate.SetResult();
            return gate;
        }
    }
}
