using Microsoft.Extensions.Time.Testing;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Tests.Turn;

namespace Relay.Server.Tests.Mqtt.Storage;

public sealed class SqliteMqttRetainedStoreTests
{
    private static readonly CancellationToken None = CancellationToken.None;

    [Fact]
    public async Task OnePerTopic_EmptyPayloadDeletes_MQTT_3_3_1_6_AndSurvivesReopen()
    {
        using var dir = new TempDataDirectory();
        var time = new FakeTimeProvider(DateTimeOffset.FromUnixTimeSeconds(1_700_000_000));
        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var store = new SqliteMqttRetainedStore(db, time);
            await store.SetAsync(new StoredMessage("a", "1"u8.ToArray(), 0, true, null, null), None);
            await store.SetAsync(new StoredMessage("a", "2"u8.ToArray(), 1, true, null, new MqttMessageProperties(null, "text/plain", null, null, null)), None);
            await store.SetAsync(new StoredMessage("b", "x"u8.ToArray(), 2, true, null, null), None);
            // [MQTT-3.3.1-6]: a zero-byte retained message removes the topic's retained message.
            await store.SetAsync(new StoredMessage("b", ReadOnlyMemory<byte>.Empty, 0, true, null, null), None);
            // [MQTT-3.3.1-7]: and is not itself stored.
            await store.SetAsync(new StoredMessage("c", ReadOnlyMemory<byte>.Empty, 0, true, null, null), None);
        }

        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var retained = await new SqliteMqttRetainedStore(db, time).LoadAllAsync(None);
            var a = Assert.Single(retained);
            Assert.Equal("a", a.Topic);
            Assert.Equal("2"u8.ToArray(), a.Payload.ToArray());
            Assert.Equal(1, a.QoS);
            Assert.True(a.Retain);
            Assert.Equal("text/plain", a.Properties!.ContentType);
        }
    }

    [Fact]
    public async Task ExpiredRetainedMessages_AreDroppedAtLoad()
    {
        using var dir = new TempDataDirectory();
        var time = new FakeTimeProvider(DateTimeOffset.FromUnixTimeSeconds(1_700_000_000));
        await using var db = MqttDatabase.Open(dir.Path);
        var store = new SqliteMqttRetainedStore(db, time);
        await store.SetAsync(new StoredMessage("old", "x"u8.ToArray(), 0, true, time.GetUtcNow().AddSeconds(10), null), None);
        await store.SetAsync(new StoredMessage("young", "y"u8.ToArray(), 0, true, time.GetUtcNow().AddSeconds(100), null), None);
        time.Advance(TimeSpan.FromSeconds(50));
        var loaded = await store.LoadAllAsync(None);
        Assert.Equal("young", Assert.Single(loaded).Topic);
        Assert.Equal(time.GetUtcNow().AddSeconds(50), loaded[0].ExpiresAt);
    }
}
