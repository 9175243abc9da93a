using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's H4 (retained part): retained messages live in memory and are all loaded at start,
/// and only their number was bounded, so one client could fill the server (100,000 x 256 KiB) or use up the
/// count so nobody else could retain. Now a retained message is held by the client id that published it,
/// and Relay:Mqtt:MaxRetainedPayloadBytes, MaxRetainedMessagesPerClient, MaxRetainedBytesPerClient and
/// MaxRetainedBytes bound it; the holder is stored, so a restart keeps the accounting.
/// </summary>
public sealed class RetainedQuotaTests
{
    private static readonly string[] Quotas =
    [
        "Relay:Mqtt:MaxRetainedPayloadBytes=400",
        "Relay:Mqtt:MaxRetainedBytesPerClient=700",
        "Relay:Mqtt:MaxRetainedBytes=100000",
        "Relay:Mqtt:Acl:0:Permission=allow",
        "Relay:Mqtt:Acl:0:Topic=lab/#",
    ];

    [Fact]
    public async Task AClientThatExhaustsItsQuota_IsRefused_OthersStillRetain_AndARestartKeepsTheAccounting()
    {
        using var data = new TempDirectory();
        string[] Settings(int perClient, params string[] more) => [$"Relay:DataDirectory={data.Path}", $"Relay:Mqtt:MaxRetainedMessagesPerClient={perClient}", .. Quotas, .. more];

        await using (var server = await EngineTestServer.StartAsync(Settings(3)))
        {
            var metrics = server.MqttMetrics();
            var (a, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "a");
            await using (a)
            {
                for (var i = 1; i <= 3; i++)
                {
                    Assert.Equal(MqttReasonCode.Success, await RetainAsync(a, $"lab/a/{i}", 100));
                }

                // Over the count: refused with v5 0x97 Quota exceeded (§3.4.2.1).
                Assert.Equal(MqttReasonCode.QuotaExceeded, await RetainAsync(a, "lab/a/4", 100));

                // Replacing one of its own is not a new message; over the payload limit is refused outright.
                Assert.Equal(MqttReasonCode.Success, await RetainAsync(a, "lab/a/1", 300));
                Assert.Equal(MqttReasonCode.QuotaExceeded, await RetainAsync(a, "lab/a/1", 401));

                // Over its bytes (payload plus topic: 307 + 407 + 107 > 700): refused, the old one stays.
                Assert.Equal(MqttReasonCode.QuotaExceeded, await RetainAsync(a, "lab/a/2", 400));
            }

            // Another client still retains.
            var (b, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "b");
            await using (b)
            {
                Assert.Equal(MqttReasonCode.Success, await RetainAsync(b, "lab/b/1", 100));
            }

            Assert.Equal(["lab/a/1:300", "lab/a/2:100", "lab/a/3:100", "lab/b/1:100"], await RetainedAsync(server));
            Assert.Equal(1, metrics.LimitHits(MqttLimit.RetainedPayloadSize));
            Assert.Equal(2, metrics.LimitHits(MqttLimit.RetainedPerClient));
        }

        // A restart: a's three messages are still a's.
        await using (var server = await EngineTestServer.StartAsync(Settings(3)))
        {
            var (a, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "a");
            await using (a)
            {
                Assert.Equal(MqttReasonCode.QuotaExceeded, await RetainAsync(a, "lab/a/5", 10));
            }

            var (b, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "b");
            await using (b)
            {
                Assert.Equal(MqttReasonCode.Success, await RetainAsync(b, "lab/b/2", 10));
            }

            Assert.Equal(["lab/a/1:300", "lab/a/2:100", "lab/a/3:100", "lab/b/1:100", "lab/b/2:10"], await RetainedAsync(server));
        }

        // The quota lowered while the messages were stored: the restore loads what fits and counts the rest.
        await using (var server = await EngineTestServer.StartAsync(Settings(2)))
        {
            Assert.Equal(["lab/a/1:300", "lab/a/2:100", "lab/b/1:100", "lab/b/2:10"], await RetainedAsync(server));
            Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.RetainedPerClient));
        }
    }

    [Fact]
    public async Task OnMqtt311_AMessageOverTheQuota_IsDeliveredButNotRetained()
    {
        await using var server = await EngineTestServer.StartAsync(["Relay:Mqtt:MaxRetainedMessagesPerClient=1", .. Quotas]);
        var (listener, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "listener");
        await using var l = listener;
        Assert.Equal([1], await listener.SubscribeAndWaitAsync("lab/#", 1));

        var (old, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "old", MqttProtocolVersion.V311);
        await using (old)
        {
            Assert.Equal(MqttReasonCode.Success, await RetainAsync(old, "lab/old/1", 10));
            Assert.Equal(MqttReasonCode.Success, await RetainAsync(old, "lab/old/2", 10));
        }

        Assert.Equal("lab/old/1", (await listener.ReceiveAsync(MqttPacketType.Publish)).Topic);
        Assert.Equal("lab/old/2", (await listener.ReceiveAsync(MqttPacketType.Publish)).Topic);
        Assert.Equal(["lab/old/1:10"], await RetainedAsync(server));
        Assert.Equal(1, server.MqttMetrics().LimitHits(MqttLimit.RetainedPerClient));
    }

    private static async Task<MqttReasonCode> RetainAsync(MqttTestClient client, string topic, int size)
    {
        var id = client.NextPacketId();
        await client.PublishAsync(topic, new string('r', size), qos: 1, retain: true, packetId: id);
        var ack = (await client.ReceiveAsync(MqttPacketType.PubAck)).Ack();
        Assert.Equal(id, ack.PacketId);
        return ack.ReasonCode;
    }

    /// <summary>What a new subscriber to lab/# is sent, as "topic:payload length", sorted.</summary>
    private static async Task<string[]> RetainedAsync(RelayTestServer server)
    {
        var (reader, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "reader-" + Guid.NewGuid().ToString("N")[..8]);
        await using var r = reader;
        Assert.Equal([0], await reader.SubscribeAndWaitAsync("lab/#", 0));
        var retained = await reader.DrainUntilPingAsync();
        return [.. retained.Select(static m => $"{m.Topic}:{m.Publish().Payload.Length}").Order(StringComparer.Ordinal)];
    }

    private sealed class TempDirectory : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("relay-retained-").FullName;

        public void Dispose()
        {
            try
            {
                Directory.Delete(Path, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
