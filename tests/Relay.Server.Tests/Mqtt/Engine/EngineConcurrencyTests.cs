using System.Globalization;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineConcurrencyTests
{
    [Fact]
    public async Task ManyPublishersAtOnce_EveryQoS1MessageArrivesExactlyOnce_InEachPublishersOrder()
    {
        const int Publishers = 8;
        const int PerPublisher = 100;
        await using var server = await EngineTestServer.StartAsync("Relay:Mqtt:MaxInflight=16");
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sink", MqttProtocolVersion.V500, o => o.Options.ReceiveMaximum = 4);
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("load/#", 1);

        var publishing = Enumerable.Range(0, Publishers).Select(async p =>
        {
            var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "p" + p);
            await using var _ = publisher;
            for (var i = 0; i < PerPublisher; i++)
            {
                await publisher.PublishAsync("load/" + p, i.ToString(CultureInfo.InvariantCulture), qos: 1);
            }

            for (var i = 0; i < PerPublisher; i++)
            {
                await publisher.ReceiveAsync(MqttPacketType.PubAck);
            }
        }).ToArray();

        var last = new int[Publishers];
        Array.Fill(last, -1);
        for (var received = 0; received < Publishers * PerPublisher; received++)
        {
            var packet = await subscriber.ReceiveAsync(MqttPacketType.Publish);
            var publish = packet.Publish();
            var publisher = int.Parse(packet.Topic["load/".Length..], CultureInfo.InvariantCulture);
            var sequence = int.Parse(packet.PayloadText, CultureInfo.InvariantCulture);
            Assert.Equal(last[publisher] + 1, sequence);
            last[publisher] = sequence;
            await subscriber.AckAsync(MqttPacketType.PubAck, publish.PacketId);
        }

        await Task.WhenAll(publishing);
        Assert.Empty(await subscriber.DrainUntilPingAsync());
    }
}
