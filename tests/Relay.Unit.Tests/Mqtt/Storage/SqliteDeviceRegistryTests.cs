using System.Text;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Tests.Turn;

namespace Relay.Server.Tests.Mqtt.Storage;

public sealed class SqliteDeviceRegistryTests
{
    private const int FastIterations = 1000;
    private static readonly CancellationToken None = CancellationToken.None;

    private static ReadOnlyMemory<byte> Utf8(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public async Task Add_Find_List_Remove_RoundTrip_AndSurviveReopen()
    {
        using var dir = new TempDataDirectory();
        var time = new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000));
        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var registry = new SqliteDeviceRegistry(db, time, FastIterations);
            Assert.True(await registry.AddAsync("d1", "s1", [new MqttGrant("broadcast/#", MqttAction.Subscribe)], None));
            Assert.False(await registry.AddAsync("d1", "other", [], None));
            Assert.True(await registry.AddAsync("d2", "s2", [], None));
            Assert.True(await registry.AddAsync("gone", "s", [], None));
            Assert.True(await registry.RemoveAsync("gone", None));
            Assert.False(await registry.RemoveAsync("gone", None));
        }

        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var registry = new SqliteDeviceRegistry(db, time, FastIterations);
            var list = await registry.ListAsync(None);
            Assert.Equal(["d1", "d2"], list.Select(d => d.Id));
            var d1 = (await registry.FindAsync("d1", None))!;
            Assert.Equal(time.GetUtcNow(), d1.CreatedAt);
            Assert.Equal([new MqttGrant("broadcast/#", MqttAction.Subscribe)], d1.ExtraGrants);
            Assert.False(d1.Disabled);
            Assert.Null(await registry.FindAsync("gone", None));
            Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("d1", Utf8("s1"), None));
            Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("d1", Utf8("s2"), None));
            Assert.Equal(SecretCheck.UnknownDevice, await registry.VerifySecretAsync("nobody", Utf8("s1"), None));
        }
    }

    [Fact]
    public async Task SecretsAreStored_OnlyAsSaltedPbkdf2()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        await registry.AddAsync("a", "same-secret", [], None);
        await registry.AddAsync("b", "same-secret", [], None);
        using var reader = db.OpenReader();
        using var command = reader.CreateCommand();
        command.CommandText = "SELECT secret_hash FROM devices ORDER BY id";
        using var rows = command.ExecuteReader();
        var hashes = new List<string>();
        while (rows.Read())
        {
            hashes.Add(rows.GetString(0));
        }

        Assert.All(hashes, h => Assert.StartsWith($"pbkdf2-sha256${FastIterations}$", h, StringComparison.Ordinal));
        Assert.All(hashes, h => Assert.DoesNotContain("same-secret", h, StringComparison.Ordinal));
        Assert.NotEqual(hashes[0], hashes[1]); // per-device random salt
    }

    [Fact]
    public async Task SuccessfulVerification_IsCached_FailuresAreNot_AndTheCacheExpires()
    {
        using var dir = new TempDataDirectory();
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch.AddYears(50));
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, time, FastIterations);
        await registry.AddAsync("d1", "s1", [], None);

        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("d1", Utf8("s1"), None));
        var runs = registry.Pbkdf2Runs;
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("d1", Utf8("s1"), None));
        Assert.Equal(runs, registry.Pbkdf2Runs);

        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("d1", Utf8("wrong"), None));
        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("d1", Utf8("wrong"), None));
        Assert.Equal(runs + 2, registry.Pbkdf2Runs);

        time.Advance(SqliteDeviceRegistry.CacheLifetime + TimeSpan.FromSeconds(1));
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("d1", Utf8("s1"), None));
        Assert.Equal(runs + 3, registry.Pbkdf2Runs);
    }

    [Fact]
    public async Task SetSecret_AndRemove_InvalidateTheCache()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        await registry.AddAsync("d1", "old", [], None);
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("d1", Utf8("old"), None));

        Assert.True(await registry.SetSecretAsync("d1", "new", None));
        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("d1", Utf8("old"), None));
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("d1", Utf8("new"), None));
        Assert.False(await registry.SetSecretAsync("unknown", "x", None));

        Assert.True(await registry.RemoveAsync("d1", None));
        Assert.Equal(SecretCheck.UnknownDevice, await registry.VerifySecretAsync("d1", Utf8("new"), None));
        // Re-added with the same secret: must be checked against the new row, not a leftover cache entry.
        await registry.AddAsync("d1", "other", [], None);
        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("d1", Utf8("new"), None));
    }

    [Fact]
    public async Task VerificationCache_IsBounded()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, iterations: 1, cacheCapacity: 4);
        for (var i = 0; i < 10; i++)
        {
            await registry.AddAsync($"d{i}", "s", [], None);
            Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync($"d{i}", Utf8("s"), None));
        }

        var runs = registry.Pbkdf2Runs;
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync($"d{i}", Utf8("s"), None));
        }

        // At most 4 of the 10 can still be cached, so at least 6 needed PBKDF2 again.
        Assert.InRange(registry.Pbkdf2Runs - runs, 6, 10);
    }

    [Theory]
    [InlineData("d1", true)]
    [InlineData("A.b_c-9", true)]
    [InlineData("", false)]
    [InlineData("a/b", false)]
    [InlineData("a+", false)]
    [InlineData("#", false)]
    [InlineData("é", false)]
    [InlineData("a b", false)]
    public async Task DeviceIds_AreValidatedTopicLevels(string id, bool valid)
    {
        Assert.Equal(valid, DeviceId.IsValid(id));
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        if (valid)
        {
            Assert.True(await registry.AddAsync(id, "s", [], None));
        }
        else
        {
            await Assert.ThrowsAsync<ArgumentException>(() => registry.AddAsync(id, "s", [], None).AsTask());
            Assert.Equal(SecretCheck.UnknownDevice, await registry.VerifySecretAsync(id, Utf8("s"), None));
        }
    }

    [Fact]
    public void DeviceIdLength_IsBoundedAt128()
    {
        Assert.True(DeviceId.IsValid(new string('a', 128)));
        Assert.False(DeviceId.IsValid(new string('a', 129)));
    }

    [Fact]
    public void Hasher_RejectsMalformedStoredValues_AndHugeIterationCounts()
    {
        var secret = "s"u8;
        var good = DeviceSecretHasher.Hash(secret, 10);
        Assert.True(DeviceSecretHasher.Verify(secret, good));
        Assert.False(DeviceSecretHasher.Verify("t"u8, good));
        Assert.False(DeviceSecretHasher.Verify(secret, "plain"));
        Assert.False(DeviceSecretHasher.Verify(secret, good.Replace("pbkdf2-sha256", "md5", StringComparison.Ordinal)));
        Assert.False(DeviceSecretHasher.Verify(secret, good.Replace("$10$", "$999999999$", StringComparison.Ordinal)));
        Assert.False(DeviceSecretHasher.Verify(secret, good[..^4]));
        Assert.Equal(43, DeviceSecretHasher.Generate().Length);
        Assert.NotEqual(DeviceSecretHasher.Generate(), DeviceSecretHasher.Generate());
    }
}
