namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// Eclipse paho (python3-paho-mqtt 1.6.1) against the broker under test: MQTT 3.1.1 and 5.0 over TCP,
/// TLS (verified against the test CA) and WebSocket (subprotocol mqtt, path /mqtt).
/// </summary>
public abstract class PahoInteropTests<TBroker>
    where TBroker : MqttBroker, IMqttBrokerStarter<TBroker>
{
    public static TheoryData<MqttVersion, string, int> Matrix()
    {
        var data = new TheoryData<MqttVersion, string, int>();
        foreach (var version in new[] { MqttVersion.V311, MqttVersion.V5 })
        {
            foreach (var transport in new[] { "tcp", "tls", "ws" })
            {
                for (var qos = 0; qos <= 2; qos++)
                {
                    data.Add(version, transport, qos);
                }
            }
        }

        return data;
    }

    // MQTT 3.1.1 / 5.0 §4.3 (QoS flows) and §4.6 (order); §6 (WebSocket: binary frames, subprotocol
    // "mqtt" [MQTT-6.0.0-3]); §5.4.5 TLS.
    [BrokerTheory]
    [MemberData(nameof(Matrix))]
    public async Task PublishSubscribe_OverEachTransport_DeliversExactlyTheMessagesInOrder(MqttVersion version, string transport, int qos)
    {
        await using var broker = await TBroker.StartAsync();
        await using var sub = await Paho.SubscribeAsync(broker, new("d1", "d1", version, transport), qos, 3, "devices/d1/#");

        await Paho.PublishAsync(broker, new("svc", "svc-pub", version, transport), "devices/d1/cmd", qos, ["p1", "p2", "p3"]);

        Assert.Equal(0, await sub.WaitForExitAsync("paho subscriber"));
        Assert.Equal([0], Paho.SubAcks(sub).Select(code => code - qos));
        Assert.Equal(
            [new("devices/d1/cmd", "p1", qos, false), new("devices/d1/cmd", "p2", qos, false), new ReceivedMessage("devices/d1/cmd", "p3", qos, false)],
            Paho.Messages(sub));
    }

    // Persistent session: 3.1.1 CleanSession=0 [MQTT-3.1.2-4] / 5.0 Clean Start=0 with Session Expiry
    // Interval [MQTT-3.1.2-23]: QoS 1 messages for an offline client are stored [MQTT-3.1.2-5] and sent on
    // reconnect, in order (§4.6). The live marker published after the reconnect comes last, so anything
    // delivered twice or out of order shows in the exact list.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task PersistentSession_QueuesQos1MessagesWhileOffline_AndDeliversThemInOrderOnReconnect(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        var device = new ClientOptions("d1", "d1", version, CleanStart: false, SessionExpirySeconds: 3600);
        await using (var first = await Paho.RunAsync(broker, device with { CleanStart = true }, "sub", "--count", "0"))
        {
            // A clean start first, so no session from an earlier client id owner can leak in.
        }

        await using (var subscribe = await Paho.RunAsync(broker, device, "sub", "--qos", "1", "--topic", "devices/d1/cmd", "--count", "0"))
        {
            Assert.Equal([1], Paho.SubAcks(subscribe));
        }

        var queued = Enumerable.Range(0, 10).Select(static i => $"cmd-{i}").ToArray();
        await Paho.PublishAsync(broker, new("svc", "svc-pub", version), "devices/d1/cmd", 1, queued);

        await using var reconnect = Paho.Start(broker, device, "sub", "--qos", "1", "--count", "11");
        await reconnect.WaitForLineAsync(static l => l == "READY", "device reconnected");
        await Paho.PublishAsync(broker, new("svc", "svc-pub", version), "devices/d1/cmd", 1, ["live"]);

        Assert.Equal(0, await reconnect.WaitForExitAsync("device draining its queue"));
        Assert.Equal([.. queued, "live"], Paho.Messages(reconnect).Select(static m => m.Payload));
        Assert.All(Paho.Messages(reconnect), static m => Assert.Equal(("devices/d1/cmd", 1), (m.Topic, m.Qos)));
    }

    // The denied filter gets the broker's code (3.1.1 §3.9.3 0x80 / 5.0 §3.9.3 0x87, or a grant where the
    // broker filters at delivery), the allowed one its QoS; none of d2's messages reach d1.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task Acl_SubAckCodes_AndNoForeignMessages(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        await using var sub = await Paho.SubscribeAsync(broker, new("d1", "d1", version), 1, 1, "devices/d2/#", "devices/d1/marker");
        Assert.Equal([broker.DeniedSubscriptionCode(version, 1), 1], Paho.SubAcks(sub));

        await Paho.PublishAsync(broker, new("svc", "svc-pub", version), "devices/d2/secret", 1, ["for d2 only"]);
        await Paho.PublishAsync(broker, new("svc", "svc-pub", version), "devices/d1/marker", 1, ["marker"]);

        Assert.Equal(0, await sub.WaitForExitAsync("paho subscriber"));
        Assert.Equal([new ReceivedMessage("devices/d1/marker", "marker", 1, false)], Paho.Messages(sub));
    }

    // 3.1.1 §3.2.2.3 return code 4 or 5 / 5.0 §3.2.2.2 reason 0x86 or 0x87, then the server closes the
    // connection [MQTT-3.2.2-5].
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task WrongPassword_ConnAckCarriesTheStandardCode(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        await using var client = Paho.Start(broker, new("d1", "d1", version, Password: "wrong"), "connect");

        Assert.Equal(3, await client.WaitForExitAsync("paho connect with a wrong password"));
        var expected = broker.BadPasswordCode(version);
        Assert.Contains(expected, version == MqttVersion.V5 ? [0x86, 0x87] : new[] { 0x04, 0x05 });
        Assert.Equal(expected, Paho.ConnAck(client));
    }

    // A will over paho on both ends, 5.0 and 3.1.1 [MQTT-3.1.2-8]; here the watcher is a service account
    // subscribed to the device's subtree.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task WillMessage_ReachesTheServiceAccount_WhenTheDeviceProcessIsKilled(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        await using var watcher = await Paho.SubscribeAsync(broker, new("svc", "svc-watch", version), 1, 1, "devices/#");
        await using var device = Paho.Start(broker, new("d1", "d1", version), "will", "--will-topic", "devices/d1/status", "--will-payload", "gone", "--will-qos", "1");
        await device.WaitForLineAsync(static l => l == "READY", "device connected with a will");

        device.Kill();

        Assert.Equal(0, await watcher.WaitForExitAsync("watcher"));
        Assert.Equal([new ReceivedMessage("devices/d1/status", "gone", 1, false)], Paho.Messages(watcher));
    }
}

public sealed class PahoInteropTests_Mosquitto : PahoInteropTests<MosquittoBroker>;

[Trait("Broker", "Relay")]
public sealed class PahoInteropTests_Relay : PahoInteropTests<RelayBroker>;
