using System.Globalization;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// What only our broker is held to. Mosquitto 2.0 is not run here: it writes its persistence file only on
/// autosave or clean shutdown, so it loses the queue on SIGKILL, and it keeps a connection that sent one
/// byte and stalled open indefinitely (measured on 2.0.11: still open after 70 s).
/// </summary>
public abstract class RelayOnlyInteropTests<TBroker>
    where TBroker : MqttBroker, IMqttBrokerStarter<TBroker>
{
    // Durability: a QoS 1 message is PUBACKed only once it is stored (3.1.1 §4.3.2 / 5.0 §4.3.2: the
    // receiver takes ownership when it sends PUBACK), so after SIGKILL and a restart on the same data
    // directory the persistent session ([MQTT-3.1.2-4], 5.0 [MQTT-3.1.2-23]) still holds all 20, in
    // order (§4.6), each once: the live marker sent after the reconnect must be the 21st.
    [BrokerTheory]
    [InlineData(MqttVersion.V311)]
    [InlineData(MqttVersion.V5)]
    public async Task Kill9_AfterPubAck_QueuedMessagesSurviveTheRestart_ExactlyOnceInOrder(MqttVersion version)
    {
        const int N = 20;
        await using var broker = await TBroker.StartAsync();
        var device = new ClientOptions("d1", "d1", version, CleanStart: false, SessionExpirySeconds: 3600);
        await using (var subscribe = await Paho.RunAsync(broker, device, "sub", "--qos", "1", "--topic", "devices/d1/cmd", "--count", "0"))
        {
            Assert.Equal([1], Paho.SubAcks(subscribe));
        }

        var queued = Enumerable.Range(0, N).Select(static i => "durable-" + i.ToString("D2", CultureInfo.InvariantCulture)).ToArray();
        await Paho.PublishAsync(broker, new("svc", "svc-pub", version), "devices/d1/cmd", 1, queued);

        await broker.KillAsync();
        await broker.RestartAsync();

        await using var reconnect = Paho.Start(broker, device, "sub", "--qos", "1", "--count", (N + 1).ToString(CultureInfo.InvariantCulture));
        await reconnect.WaitForLineAsync(static l => l == "READY", "device reconnected after the restart");
        await Paho.PublishAsync(broker, new("svc", "svc-pub", version), "devices/d1/cmd", 1, ["live"]);

        var exit = await reconnect.WaitForExitAsync("device draining its queue");
        Assert.Equal([.. queued, "live"], Paho.Messages(reconnect).Select(static m => m.Payload));
        Assert.True(exit == 0, reconnect.Transcript);
    }

    // Slowloris: one byte of a CONNECT, then nothing. The broker closes it once its CONNECT deadline
    // passes (Relay:Mqtt:ConnectTimeoutSeconds; 3.1.1 §3.1.4 / 5.0 §3.1.4 leave the bound to the server),
    // and serves normal clients all along.
    [BrokerFact]
    public async Task Slowloris_OneByteThenSilence_IsClosed_AndOthersAreServed()
    {
        await using var broker = await TBroker.StartAsync();
        using var stalled = await RawMqtt.ConnectAsync(broker.TcpPort);
        await stalled.GetStream().WriteAsync(new byte[] { 0x10 });

        await using (var meanwhile = await Paho.RunAsync(broker, new("d2", "d2", MqttVersion.V311), "connect"))
        {
            Assert.Equal(0, Paho.ConnAck(meanwhile));
        }

        var answer = await RawMqtt.WaitForCloseAsync(stalled, broker, "slowloris", TimeSpan.FromSeconds(60));
        Assert.Empty(answer);
        await using var after = await Paho.RunAsync(broker, new("d1", "d1", MqttVersion.V5), "connect");
        Assert.Equal(0, Paho.ConnAck(after));
    }
}

[Trait("Broker", "Relay")]
public sealed class RelayOnlyInteropTests_Relay : RelayOnlyInteropTests<RelayBroker>;

