using System.Text;
using Relay.Protocol.Mqtt;
using Relay.Server.Push;
using Relay.Server.Tests.Mqtt.Engine;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's M3: a device's result was acknowledged even when it was not stored (the commit
/// failed, the command loop was full or slow), so the device forgot a result the server never recorded.
/// Now the PUBACK goes only after the commit: MQTT 5 gets PUBACK 0x80 and sends again, MQTT 3.1.1 gets no
/// PUBACK (the connection closes) and sends again after reconnecting; the result is recorded once. The
/// failure is a real SQLite error inside the server's own store (<see cref="StoreFailure"/>).
/// </summary>
public sealed class ResultAcknowledgementTests
{
    [Fact]
    public async Task Mqtt5_AResultWhoseCommitFails_GetsPubAck0x80_AndIsRecordedOnceWhenSentAgain()
    {
        await using var kit = await PushTestKit.StartAsync();

        // The store's failure is logged as an error; that is expected here.
        kit.Server.AllowErrors = true;
        var (device, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", MqttProtocolVersion.V500, Device("d1", persistent: false));
        await using var d = device;
        var id = await TakeOneCommandAsync(kit, device);

        await using (await StoreFailure.FinalTransitionsAsync(kit.Server.DataDirectory))
        {
            await device.PublishAsync("devices/d1/results", Result(id), qos: 1, packetId: 7);
            var ack = (await device.ReceiveAsync(MqttPacketType.PubAck)).Ack();
            Assert.Equal(7, ack.PacketId);
            Assert.Equal(MqttReasonCode.UnspecifiedError, ack.ReasonCode);
            Assert.Equal("delivered", (await PushTestKit.GetAsync(kit.Http, id)).GetProperty("state").GetString());
        }

        // The device sends it again, as a PUBACK >= 0x80 tells it to: now it is stored, once.
        await device.PublishAsync("devices/d1/results", Result(id), qos: 1, packetId: 8);
        var second = (await device.ReceiveAsync(MqttPacketType.PubAck)).Ack();
        Assert.Equal(MqttReasonCode.Success, second.ReasonCode);
        await AssertRecordedOnceAsync(kit, id);
    }

    [Fact]
    public async Task Mqtt311_AResultWhoseCommitFails_IsNotAcknowledged_TheConnectionCloses_AndTheResentResultIsRecordedOnce()
    {
        await using var kit = await PushTestKit.StartAsync();
        kit.Server.AllowErrors = true;
        var (device, _) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", MqttProtocolVersion.V311, Device("d1", persistent: true));
        string id;
        await using (device)
        {
            id = await TakeOneCommandAsync(kit, device);
            await using (await StoreFailure.FinalTransitionsAsync(kit.Server.DataDirectory))
            {
                await device.PublishAsync("devices/d1/results", Result(id), qos: 1, packetId: 7);

                // 3.1.1 has no negative acknowledgement: no PUBACK, the connection ends.
                var packets = await device.ReadUntilClosedAsync();
                Assert.DoesNotContain(packets, static p => p.Type == MqttPacketType.PubAck);
            }
        }

        Assert.Equal("delivered", (await PushTestKit.GetAsync(kit.Http, id)).GetProperty("state").GetString());

        // [MQTT-4.4.0-1]: the client resends the unacknowledged PUBLISH, DUP set, after reconnecting with its session.
        var (again, connAck) = await MqttTestClient.ConnectAsync(kit.Server.MqttPort, "d1", MqttProtocolVersion.V311, Device("d1", persistent: true));
        await using var a = again;
        Assert.True(connAck.ConnAck().SessionPresent);
        await again.PublishAsync("devices/d1/results", Result(id), qos: 1, packetId: 7, dup: true);
        var ack = (await again.ReceiveAsync(MqttPacketType.PubAck)).Ack();
        Assert.Equal(7, ack.PacketId);
        await AssertRecordedOnceAsync(kit, id);
    }

    private static Action<MqttConnectOptionsBuilder> Device(string id, bool persistent) => o =>
    {
        o.Options.Username = id;
        o.Options.Password = Encoding.UTF8.GetBytes(PushTestKit.Secret);
        o.Options.HasPassword = true;
        if (persistent)
        {
            o.Options.CleanStart = false;
            o.Options.SessionExpiryInterval = o.Options.Version == MqttProtocolVersion.V500 ? 3600 : null;
        }
    };

    private static string Result(string id) => $"{{\"id\":\"{id}\",\"status\":\"succeeded\",\"payload\":{{\"n\":1}}}}";

    /// <summary>Subscribes, has one command pushed, acknowledges it and waits until "delivered" is stored.</summary>
    private static async Task<string> TakeOneCommandAsync(PushTestKit kit, MqttTestClient device)
    {
        Assert.Equal([1], await device.SubscribeAndWaitAsync("devices/d1/commands", 1));
        var id = await PushTestKit.PushAsync(kit.Http, "d1", "blink");
        var command = (await device.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.Contains(id, Encoding.UTF8.GetString(command.Payload), StringComparison.Ordinal);
        await device.AckAsync(MqttPacketType.PubAck, command.PacketId);
        await kit.Sink.WaitAsync(id, CommandState.Delivered);
        return id;
    }

    private static async Task AssertRecordedOnceAsync(PushTestKit kit, string id)
    {
        var command = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
        Assert.Equal("succeeded", command.GetProperty("state").GetString());
        Assert.Equal(1, command.GetProperty("result").GetProperty("n").GetInt32());
        Assert.Equal(["queued", "delivered", "succeeded"], command.GetProperty("transitions").EnumerateArray().Select(static t => t.GetProperty("state").GetString()!).ToArray());
        Assert.Single(kit.Sink.Transitions, t => t.CommandId == id && t.State == CommandState.Succeeded);
    }
}
