namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// Debian's mosquitto_pub / mosquitto_sub (and a paho client for wills) against the broker under test,
/// MQTT 3.1.1 and 5.0. Every test asserts the exact messages a subscriber got, in order.
/// </summary>
public abstract class MosquittoClientsInteropTests<TBroker>
    where TBroker : MqttBroker, IMqttBrokerStarter<TBroker>
{
    private static ClientOptions Svc(MqttVersion v, string id = "svc-pub") => new("svc", id, v);

    private static ClientOptions D1(MqttVersion v) => new("d1", "d1", v);

    public static TheoryData<MqttVersion, int> VersionsAndQos() => new()
    {
        { MqttVersion.V311, 0 }, { MqttVersion.V311, 1 }, { MqttVersion.V311, 2 },
        { MqttVersion.V5, 0 }, { MqttVersion.V5, 1 }, { MqttVersion.V5, 2 },
    };

    // MQTT 3.1.1 §4.3 / MQTT 5.0 §4.3: each QoS flow; [MQTT-3.8.4-6] / [MQTT-3.3.4-1]: the delivered QoS
    // is the minimum of the PUBLISH QoS and the granted QoS, here equal. §4.6: messages from one
    // publisher on one topic arrive in the order sent.
    [BrokerTheory]
    [MemberData(nameof(VersionsAndQos))]
    public async Task PublishSubscribe_DeliversExactlyTheMessagesInOrder(MqttVersion version, int qos)
    {
        await using var broker = await TBroker.StartAsync();
        await using var sub = await MosquittoCli.SubscribeAsync(broker, D1(version), qos, 3, ["devices/d1/#"]);

        await MosquittoCli.PublishAsync(broker, Svc(version), "devices/d1/cmd", qos, ["m1", "m2", "m3"]);

        Assert.Equal(0, await sub.WaitForExitAsync("mosquitto_sub"));
        Assert.Equal(
            [new("devices/d1/cmd", "m1", qos, false), new("devices/d1/cmd", "m2", qos, false), new ReceivedMessage("devices/d1/cmd", "m3", qos, false)],
            MosquittoCli.Messages(sub));
    }

    // [MQTT-3.3.1-6] / [MQTT-3.3.1-9]: a new subscription gets the retained message with RETAIN set;
    // [MQTT-3.3.1-10] / [MQTT-3.3.1-6 in 5.0]: a retained zero-length PUBLISH removes it.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task RetainedMessage_ReachesALaterSubscriber_AndAnEmptyRetainedPublishClearsIt(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        await MosquittoCli.PublishAsync(broker, Svc(version), "devices/d1/state", 1, ["on"], retain: true);

        await using (var later = await MosquittoCli.SubscribeAsync(broker, D1(version), 1, 1, ["devices/d1/state"]))
        {
            Assert.Equal(0, await later.WaitForExitAsync("mosquitto_sub"));
            Assert.Equal([new ReceivedMessage("devices/d1/state", "on", 1, true)], MosquittoCli.Messages(later));
        }

        await MosquittoCli.PublishAsync(broker, Svc(version), "devices/d1/state", 1, [null], retain: true);

        // --retained-only prints retained messages and exits at the first live one: a retained message
        // still stored would arrive right after the SUBACK, before the live message published after it.
        await using var after = await MosquittoCli.SubscribeAsync(broker, D1(version), 1, 1, ["devices/d1/state"], "--retained-only");
        await MosquittoCli.PublishAsync(broker, Svc(version), "devices/d1/state", 1, ["live"]);
        await after.WaitForExitAsync("mosquitto_sub --retained-only");
        Assert.Empty(MosquittoCli.Messages(after));
    }

    // MQTT 3.1.1 §3.1.2.5 / MQTT 5.0 §3.1.2.5: the will is published when the network connection closes
    // without DISCONNECT [MQTT-3.1.2-8]; SIGKILL on the client closes its socket that way.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task WillMessage_IsDeliveredWhenTheClientIsKilled(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        await using var watcher = await MosquittoCli.SubscribeAsync(broker, Svc(version, "svc-watch"), 1, 1, ["devices/d1/status"]);
        await using var device = Paho.Start(broker, D1(version), "will", "--will-topic", "devices/d1/status", "--will-payload", "offline", "--will-qos", "1");
        await device.WaitForLineAsync(static l => l == "READY", "device connected with a will");

        device.Kill();

        Assert.Equal(0, await watcher.WaitForExitAsync("mosquitto_sub waiting for the will"));
        Assert.Equal([new ReceivedMessage("devices/d1/status", "offline", 1, false)], MosquittoCli.Messages(watcher));
    }

    // ACL: d1 may use only devices/d1/#. The denied filter gets the broker's failure code (3.1.1 §3.9.3
    // 0x80, 5.0 §3.9.3 0x87) or, for a broker that filters at delivery, a grant; either way none of
    // d2's messages reach d1. The marker is published after d2's message, so once it arrived d2's would
    // have too (§4.6 ordering).
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task Acl_DeviceSubscribingToAnotherDevice_ReceivesNoneOfItsMessages(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        await using var sub = await MosquittoCli.SubscribeAsync(broker, D1(version), 1, 1, ["devices/d2/#", "devices/d1/marker"]);
        Assert.Equal([broker.DeniedSubscriptionCode(version, 1), 1], MosquittoCli.SubAcks(sub));

        await MosquittoCli.PublishAsync(broker, Svc(version), "devices/d2/secret", 1, ["for d2 only"]);
        await MosquittoCli.PublishAsync(broker, Svc(version), "devices/d1/marker", 1, ["marker"]);

        Assert.Equal(0, await sub.WaitForExitAsync("mosquitto_sub"));
        Assert.Equal([new ReceivedMessage("devices/d1/marker", "marker", 1, false)], MosquittoCli.Messages(sub));
    }

    // 3.1.1 §3.2.2.3 / 5.0 §3.2.2.2: a refused CONNECT gets a non-zero CONNACK code and the connection
    // closes [MQTT-3.2.2-5]; mosquitto_sub exits with that code.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task WrongPassword_IsRefusedWithTheStandardCode(MqttVersion version)
    {
        await using var broker = await TBroker.StartAsync();
        var client = D1(version) with { Password = "not-the-secret" };
        List<string> arguments = ["-V", version == MqttVersion.V5 ? "mqttv5" : "mqttv311", "-h", MqttBroker.Host, "-p", broker.TcpPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-i", client.ClientId, "-u", client.User, "-P", client.Password!, "-t", "devices/d1/#", "-C", "1", "-W", "30"];
        await using var sub = ToolProcess.Start("mosquitto_sub", arguments, TimeSpan.FromMinutes(1));

        var exit = await sub.WaitForExitAsync("mosquitto_sub with a wrong password");

        var expected = broker.BadPasswordCode(version);
        Assert.Contains(expected, version == MqttVersion.V5 ? [0x86, 0x87] : new[] { 0x04, 0x05 });
        Assert.True(exit == expected, $"exit {exit}, expected {expected}\n{sub.Transcript}");
        var text = expected switch
        {
            0x04 => "Connection Refused: bad user name or password",
            0x05 => "Connection Refused: not authorised",
            0x86 => "Bad User Name or Password", // libmosquitto's mosquitto_reason_string
            _ => "Not authorized",
        };
        Assert.Contains(text, sub.Transcript, StringComparison.Ordinal);
    }
}

public sealed class MosquittoClientsInteropTests_Mosquitto : MosquittoClientsInteropTests<MosquittoBroker>;

[Trait("Broker", "Relay")]
public sealed class MosquittoClientsInteropTests_Relay : MosquittoClientsInteropTests<RelayBroker>;
