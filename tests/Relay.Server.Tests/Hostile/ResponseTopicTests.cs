using System.Buffers;
using System.Text;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's L8: an MQTT 5 Response Topic (§3.3.2.3.5, §4.10) names where the receiver should
/// publish its answer. Forwarded unchecked, it let a device aim a back end that answers requests
/// (subscribed to <c>devices/#</c>, allowed to publish anywhere under it) at another device's command topic.
/// A PUBLISH is now accepted only when its publisher could subscribe to its Response Topic, i.e. could
/// receive the answer itself; otherwise it is refused with 0x87 Not authorized, Correlation Data and all.
/// </summary>
public sealed class ResponseTopicTests
{
    private const string Secret = "correct-horse-battery-staple";

    [Fact]
    public async Task AResponseTopicThePublisherMayNotSubscribeTo_IsRefused_AndItsOwnIsForwarded()
    {
        await using var server = await EngineTestServer.StartAsync(
            "Relay:Mqtt:AllowAnonymous=false",
            "Relay:Mqtt:Devices:0:Id=d1",
            $"Relay:Mqtt:Devices:0:Secret={Secret}",
            "Relay:Mqtt:Devices:1:Id=d2",
            $"Relay:Mqtt:Devices:1:Secret={Secret}",
            "Relay:Mqtt:ServiceAccounts:0:Name=svc",
            $"Relay:Mqtt:ServiceAccounts:0:Password={Secret}",
            "Relay:Mqtt:ServiceAccounts:0:Grants:0=devices/#");
        var metrics = server.MqttMetrics();

        var (backEnd, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "svc", MqttProtocolVersion.V500, As("svc"));
        await using var b = backEnd;
        Assert.Equal([1], await backEnd.SubscribeAndWaitAsync("devices/#", 1));

        var (device, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "d1", MqttProtocolVersion.V500, As("d1"));
        await using var d = device;

        // Aimed at d2's command topic: refused, and the back end never sees the request.
        var hostile = new MqttPublishProperties { ResponseTopic = "devices/d2/commands", CorrelationData = "c1"u8.ToArray(), HasCorrelationData = true };
        await device.PublishAsync("devices/d1/requests", "reboot", qos: 1, packetId: 1, properties: hostile);
        Assert.Equal(MqttReasonCode.NotAuthorized, (await device.ReceiveAsync()).Ack().ReasonCode);

        // QoS 0 has no answer to carry the refusal; it is dropped all the same.
        await device.PublishAsync("devices/d1/requests", "reboot", qos: 0, properties: hostile);
        Assert.Empty(await device.DrainUntilPingAsync());
        Assert.Empty(await backEnd.DrainUntilPingAsync());
        Assert.Equal(2, metrics.Drops(MqttDropReason.NotAuthorized));

        // Its own subtree: forwarded with Response Topic and Correlation Data intact.
        var own = new MqttPublishProperties { ResponseTopic = "devices/d1/responses", CorrelationData = "c2"u8.ToArray(), HasCorrelationData = true };
        await device.PublishAsync("devices/d1/requests", "status", qos: 1, packetId: 2, properties: own);
        Assert.Equal(MqttReasonCode.Success, (await device.ReceiveAsync()).Ack().ReasonCode);
        var request = (await backEnd.ReceiveAsync(MqttPacketType.Publish)).Publish();
        Assert.Equal("devices/d1/responses", Encoding.UTF8.GetString(request.Properties.ResponseTopic));
        Assert.Equal("c2"u8.ToArray(), request.Properties.CorrelationData.ToArray());
    }

    private static Action<MqttConnectOptionsBuilder> As(string user) => o =>
    {
        o.Options.Username = user;
        o.Options.Password = Encoding.UTF8.GetBytes(Secret);
        o.Options.HasPassword = true;
    };
}
