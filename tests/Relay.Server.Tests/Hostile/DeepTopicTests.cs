using System.Text;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.InMemory;
using Relay.Protocol.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;
using Relay.Server.Tests.Mqtt.Interop;
using Microsoft.Extensions.DependencyInjection;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's C1: a topic of ~60,000 levels, retained, used to end the process with a stack
/// overflow on the next wildcard SUBSCRIBE, and again after every restart because the row was stored.
/// Out of process where a crash must be seen as a dead server rather than a dead test host.
/// </summary>
public sealed class DeepTopicTests
{
    private const int Levels = 60_000;

    private static string DeepTopic(string prefix, string last) => prefix + new string('/', Levels) + last;

    private static Action<MqttConnectOptionsBuilder> As(string user) => o =>
    {
        o.Options.Username = user;
        o.Options.Password = Encoding.UTF8.GetBytes(Mqtt.Interop.MqttBroker.Secret(user));
        o.Options.HasPassword = true;
    };

    [Fact]
    public async Task DeepRetainedPublish_IsRefused_AndWildcardSubscribersSurviveIt_AndARestart()
    {
        await using var broker = await RelayBroker.StartAsync();

        // The attack from the issue, inside the device's own subtree.
        var (device, _) = await MqttTestClient.ConnectAsync(broker.TcpPort, "d1", MqttProtocolVersion.V500, As("d1"));
        await using (device)
        {
            await device.PublishAsync(DeepTopic("devices/d1/", "x"), "boom", qos: 1, retain: true, packetId: 9);
            var ack = (await device.ReceiveAsync()).Ack();
            Assert.Equal(MqttPacketType.PubAck, ack.Type);
            Assert.Equal(MqttReasonCode.TopicNameInvalid, ack.ReasonCode);

            // Short but deeper than Relay:Mqtt:MaxTopicLevels (32): refused the same way.
            await device.PublishAsync("devices/d1" + string.Concat(Enumerable.Repeat("/l", 40)), "deep", qos: 1, retain: true, packetId: 10);
            Assert.Equal(MqttReasonCode.TopicNameInvalid, (await device.ReceiveAsync()).Ack().ReasonCode);

            // A deep filter is refused per entry, the shallow one beside it granted.
            await device.SubscribeAsync(DeepTopic("devices/d1/", "#"), qos: 1);
            var subAck = await device.ReceiveAsync();
            Assert.Equal([(byte)MqttReasonCode.TopicFilterInvalid], subAck.SubAckCodes());
            Assert.Equal([1], await device.SubscribeAndWaitAsync("devices/d1/#", 1));
        }

        await AssertWildcardSubscriberServedAsync(broker);
        Assert.Contains("topic over Relay:Mqtt:MaxTopic", broker.Log, StringComparison.Ordinal);
        await broker.KillAsync();
        await broker.RestartAsync();
        await AssertWildcardSubscriberServedAsync(broker);
    }

    [Fact]
    public async Task DeepPublish_On311_ClosesTheConnection_AndTheServerStaysUp()
    {
        await using var broker = await RelayBroker.StartAsync();
        var (device, _) = await MqttTestClient.ConnectAsync(broker.TcpPort, "d1", MqttProtocolVersion.V311, As("d1"));
        await using (device)
        {
            await device.PublishAsync(DeepTopic("devices/d1/", "x"), "boom", qos: 1, retain: true, packetId: 3);
            Assert.Empty(await device.ReadUntilClosedAsync());
        }

        await AssertWildcardSubscriberServedAsync(broker);
    }

    [Fact]
    public async Task DeepWillTopic_IsRefusedAtConnect()
    {
        // A CONNECT as large as the 60,000-level will needs more than Relay:Mqtt:MaxPreConnectPacketBytes
        // (16 KiB by default, review L6, which would close it on its header): raised here so the topic check speaks.
        await using var broker = await RelayBroker.StartAsync(["--Relay:Mqtt:MaxPreConnectPacketBytes=262144"]);
        var (device, connAck) = await MqttTestClient.ConnectAsync(broker.TcpPort, "d1", MqttProtocolVersion.V500, o =>
        {
            As("d1")(o);
            o.Options.WillTopic = DeepTopic("devices/d1/", "will");
            o.Options.WillPayload = "gone"u8.ToArray();
        }, expectSuccess: false);
        await using (device)
        {
            Assert.Equal((byte)MqttReasonCode.TopicNameInvalid, connAck.ConnAck().ReasonCode);
        }

        await AssertWildcardSubscriberServedAsync(broker);
    }

    /// <summary>
    /// A retained row written before the limits existed (or under looser ones): the restore skips it, says
    /// so, deletes it, and the first wildcard SUBSCRIBE after the start finds a live server.
    /// </summary>
    [Fact]
    public async Task Restore_SkipsAndDeletesStoredRowsOverTheLimits()
    {
        var retained = new InMemoryRetainedStore();
        var deep = DeepTopic("lab/", "x");
        await retained.SetAsync(new StoredMessage(deep, "boom"u8.ToArray(), 0, true, null, null), CancellationToken.None);
        await retained.SetAsync(new StoredMessage("lab/state", "ok"u8.ToArray(), 0, true, null, null), CancellationToken.None);
        var sessions = new InMemorySessionStore();
        await sessions.UpsertSessionAsync("old", 3600, DateTimeOffset.UtcNow, null, CancellationToken.None);
        await sessions.UpsertSubscriptionAsync("old", new PersistedSubscription(DeepTopic("a", "#"), 1, false, false, 0, 0), CancellationToken.None);
        await sessions.UpsertSubscriptionAsync("old", new PersistedSubscription("a/#", 1, false, false, 0, 0), CancellationToken.None);

        await using var server = await EngineTestServer.StartAsync(
            s =>
            {
                s.AddSingleton<IMqttSessionStore>(sessions);
                s.AddSingleton<IMqttRetainedStore>(retained);
            },
            "Relay:Mqtt:Acl:0:Permission=allow",
            "Relay:Mqtt:Acl:0:Topic=#");

        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "svc", MqttProtocolVersion.V500);
        await using var s = subscriber;
        Assert.Equal([0], await subscriber.SubscribeAndWaitAsync("#", 0));
        var delivered = await subscriber.DrainUntilPingAsync();
        Assert.Equal("lab/state", Assert.Single(delivered).Topic);

        Assert.DoesNotContain(await retained.LoadAllAsync(CancellationToken.None), m => m.Topic == deep);
        var old = Assert.Single(await sessions.LoadAllAsync(CancellationToken.None), static p => p.ClientId == "old");
        Assert.Equal("a/#", Assert.Single(old.Subscriptions).TopicFilter);
        Assert.Equal(2, server.MqttMetrics().LimitHits(MqttLimit.TopicLength));
    }

    private static async Task AssertWildcardSubscriberServedAsync(RelayBroker broker)
    {
        // The back end's catch-all subscription: this is what used to overflow the stack.
        var (backEnd, _) = await MqttTestClient.ConnectAsync(broker.TcpPort, "svc", MqttProtocolVersion.V500, As("svc"));
        await using var b = backEnd;
        Assert.Equal([1], await backEnd.SubscribeAndWaitAsync("devices/#", 1));
        Assert.DoesNotContain(await backEnd.DrainUntilPingAsync(), static m => m.Topic.Length > 1000);

        // And the server still routes: a device publishes, the back end receives.
        var (device, _) = await MqttTestClient.ConnectAsync(broker.TcpPort, "d2", MqttProtocolVersion.V500, As("d2"));
        await using var d = device;
        await device.PublishAsync("devices/d2/telemetry", "21.5", qos: 1, packetId: 1);
        Assert.Equal(MqttReasonCode.Success, (await device.ReceiveAsync()).Ack().ReasonCode);
        var message = await backEnd.ReceiveAsync(MqttPacketType.Publish);
        Assert.Equal("devices/d2/telemetry", message.Topic);
    }
}
