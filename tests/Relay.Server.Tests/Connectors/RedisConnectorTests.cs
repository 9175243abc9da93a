using System.Globalization;
using System.Text.RegularExpressions;
using Relay.Server.Connectors;
using StackExchange.Redis;
using static Relay.Server.Tests.Connectors.ConnectorTestKit;

namespace Relay.Server.Tests.Connectors;

/// <summary>The Redis connector against a real redis-server (Debian's package), started by the test class.</summary>
public sealed partial class RedisConnectorTests(RedisServer redis) : IClassFixture<RedisServer>
{
    [Fact]
    public async Task Keys_AreClientIdUnderscoreUnixtime_WithASuffixPerExtraMessageInTheSameSecond_AndTheTtl()
    {
        await using var server = await StartAsync("Redis", $"Configuration={redis.Configuration}", "KeyPrefix=k1:", "KeyTtlSeconds=3600");
        var payloads = Numbered("reading-", 6);
        var before = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        await PublishAsync(server, "devices/d1/telemetry", payloads);
        var after = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        await using var client = await ConnectAsync();
        var keys = await WaitForKeysAsync(server, client, "k1:d1_*", payloads.Count);
        var database = client.GetDatabase();
        var bySecond = new Dictionary<long, List<int>>();
        foreach (var key in keys)
        {
            var match = KeyPattern().Match(key);
            Assert.True(match.Success, $"key {key} is not k1:d1_{{unixtime}}[_n]");
            var second = long.Parse(match.Groups["second"].Value, CultureInfo.InvariantCulture);
            Assert.InRange(second, before, after);
            var suffix = match.Groups["n"].Success ? int.Parse(match.Groups["n"].Value, CultureInfo.InvariantCulture) : 0;
            (bySecond.TryGetValue(second, out var list) ? list : bySecond[second] = []).Add(suffix);
            var ttl = await database.KeyTimeToLiveAsync(key);
            Assert.NotNull(ttl);
            Assert.InRange(ttl.Value, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(3600));
        }

        // In each second: the plain key, then _1, _2, ... with no gap; and every payload exactly once.
        Assert.All(bySecond.Values, static suffixes => Assert.Equal(Enumerable.Range(0, suffixes.Count), suffixes.Order()));
        var values = await database.StringGetAsync([.. keys.Select(static k => (RedisKey)k)]);
        Assert.Equal(payloads.Order(StringComparer.Ordinal), values.Select(static v => (string)v!).Order(StringComparer.Ordinal));
        Assert.Equal(0, Counters(server).DroppedTotal(0));
    }

    [Fact]
    public async Task Stream_GetsOneEntryPerMessage_InOrder_WithTheMessagesFields()
    {
        await using var server = await StartAsync("Redis", $"Configuration={redis.Configuration}", "Mode=Stream", "StreamKey=s-fields", "TopicFilter=devices/d1/#");
        await PublishAsync(server, "devices/d1/telemetry", ["a", "b", "c"]);

        await using var client = await ConnectAsync();
        var entries = await WaitForStreamAsync(server, client, "s-fields", 3);
        Assert.Equal(["a", "b", "c"], entries.Select(static e => (string)e["payload"]!));
        Assert.All(entries, static e =>
        {
            Assert.Equal(Device, (string)e["client"]!);
            Assert.Equal("devices/d1/telemetry", (string)e["topic"]!);
            Assert.Equal("1", (string)e["qos"]!);
            Assert.Equal("0", (string)e["retain"]!);
            Assert.InRange(long.Parse((string)e["at"]!, CultureInfo.InvariantCulture), DateTimeOffset.UtcNow.AddMinutes(-5).ToUnixTimeMilliseconds(), DateTimeOffset.UtcNow.AddMinutes(1).ToUnixTimeMilliseconds());
        });
    }

    [Fact]
    public async Task TargetGoesDownAndComesBack_NothingIsLostWithinTheLimit_InOrder()
    {
        await using var server = await StartAsync("Redis", [$"Configuration={redis.Configuration}", "Mode=Stream", "StreamKey=s-outage", .. QuickBackoff]);
        await PublishAsync(server, "devices/d1/telemetry", ["warm-up"]);
        await using (var client = await ConnectAsync())
        {
            await WaitForStreamAsync(server, client, "s-outage", 1);
        }

        await redis.StopAsync();
        var during = Numbered("during-", 30);
        try
        {
            await PublishAsync(server, "devices/d1/telemetry", during);
            await Poll.UntilAsync(() => Counters(server).SpillMessages(0) == 30, "the 30 messages spilled to disk", describe: () => Task.FromResult(Describe(server)));
        }
        finally
        {
            // Back on the same port, empty (it persisted nothing): what arrives now came from the spill.
            await redis.StartAsync();
        }

        await using var after = await ConnectAsync();
        var entries = await WaitForStreamAsync(server, after, "s-outage", 30);
        Assert.Equal(during, entries.Select(static e => (string)e["payload"]!));
        Assert.Equal(31, Counters(server).Delivered(0));
        Assert.Equal(0, Counters(server).DroppedTotal(0));
    }

    [Fact]
    public async Task DownPastTheSpillLimit_TheNewestAreDroppedAndCounted_AndNothingElseIsLost()
    {
        // About 10 records of these fit in 2,500 bytes: the oldest are kept, the rest counted as spill_full.
        await using var server = await StartAsync("Redis", [$"Configuration={redis.Configuration}", "Mode=Stream", "StreamKey=s-limit", "SpillMaxBytes=2500", .. QuickBackoff]);
        await PublishAsync(server, "devices/d1/telemetry", ["warm-up"]);
        await using (var client = await ConnectAsync())
        {
            await WaitForStreamAsync(server, client, "s-limit", 1);
        }

        await redis.StopAsync();
        var sent = Numbered(new string('x', 200) + "-", 40);
        try
        {
            await PublishAsync(server, "devices/d1/telemetry", sent);
            await Poll.UntilAsync(
                () => Counters(server).SpillMessages(0) + Counters(server).Dropped(0, ConnectorDropReason.SpillFull) == 40,
                "every message spilled or counted",
                describe: () => Task.FromResult(Describe(server)));
        }
        finally
        {
            await redis.StartAsync();
        }

        var dropped = Counters(server).Dropped(0, ConnectorDropReason.SpillFull);
        Assert.InRange(dropped, 1, 39);
        await using var after = await ConnectAsync();
        var entries = await WaitForStreamAsync(server, after, "s-limit", 40 - (int)dropped);
        Assert.Equal(sent.Take(40 - (int)dropped), entries.Select(static e => (string)e["payload"]!));
        Assert.Equal(dropped, Counters(server).DroppedTotal(0));
        Assert.Equal(1 + 40 - dropped, Counters(server).Delivered(0));
    }

    [GeneratedRegex("^k1:d1_(?<second>[0-9]+)(_(?<n>[0-9]+))?$")]
    private static partial Regex KeyPattern();

    private async Task<ConnectionMultiplexer> ConnectAsync() => await ConnectionMultiplexer.ConnectAsync(redis.Configuration + ",allowAdmin=true");

    private static async Task<List<string>> WaitForKeysAsync(RelayTestServer server, ConnectionMultiplexer client, string pattern, int count)
    {
        List<string> keys = [];
        await Poll.UntilAsync(
            () =>
            {
                keys = [.. client.GetServers()[0].Keys(pattern: pattern).Select(static k => (string)k!)];
                return keys.Count >= count;
            },
            $"{count} keys {pattern}",
            TimeSpan.FromSeconds(60),
            TimeSpan.FromMilliseconds(50),
            () => Task.FromResult($"{keys.Count} keys; {Describe(server)}"));
        Assert.Equal(count, keys.Count);
        return keys;
    }

    private static async Task<List<Dictionary<string, RedisValue>>> WaitForStreamAsync(RelayTestServer server, ConnectionMultiplexer client, string stream, int count)
    {
        List<Dictionary<string, RedisValue>> entries = [];
        await Poll.UntilAsync(
            async () =>
            {
                var read = await client.GetDatabase().StreamRangeAsync(stream);
                entries = [.. read.Select(static e => e.Values.ToDictionary(static v => (string)v.Name!, static v => v.Value))];
                return entries.Count >= count;
            },
            $"{count} entries in {stream}",
            TimeSpan.FromSeconds(60),
            TimeSpan.FromMilliseconds(50),
            () => Task.FromResult($"{entries.Count} entries; {Describe(server)}"));
        Assert.Equal(count, entries.Count);
        return entries;
    }
}
