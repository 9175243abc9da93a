using System.Net;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Tests.Mqtt.Storage;

namespace Relay.Server.Tests.Mqtt.Identity;

/// <summary>
/// The restart storm (review H2) and its neighbours: generated secrets verify with one keyed hash, chosen
/// ones with PBKDF2 on a bounded pool that says busy instead of queueing without end; the failure budget is
/// taken before the check (M1) per IPv4 address or IPv6 /64; a secret changed behind the server's back
/// stops matching at once (M7).
/// </summary>
public sealed class DeviceSecretTests
{
    private const int FastIterations = 1000;
    private static readonly CancellationToken None = CancellationToken.None;

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public void GeneratedSecrets_GetTheFastHash_ChosenOnesPbkdf2()
    {
        var generated = DeviceSecretHasher.Generate();
        Assert.Equal(DeviceSecretHasher.GeneratedLength, generated.Length);
        Assert.True(DeviceSecretHasher.IsGeneratedForm(Utf8(generated)));
        Assert.Equal(SecretHashKind.Fast, DeviceSecretHasher.KindOf(DeviceSecretHasher.Hash(Utf8(generated), FastIterations)));

        foreach (var chosen in new[] { "device-secret-1", new string('a', 43), new string('A', 42) + "Q", generated + "x", generated[..42] + "+" })
        {
            Assert.False(DeviceSecretHasher.IsGeneratedForm(Utf8(chosen)), chosen);
            Assert.Equal(SecretHashKind.Slow, DeviceSecretHasher.KindOf(DeviceSecretHasher.Hash(Utf8(chosen), FastIterations)));
        }

        var fast = DeviceSecretHasher.HashFast(Utf8(generated));
        Assert.True(DeviceSecretHasher.Verify(Utf8(generated), fast));
        Assert.False(DeviceSecretHasher.Verify(Utf8(DeviceSecretHasher.Generate()), fast));
        Assert.NotEqual(fast, DeviceSecretHasher.HashFast(Utf8(generated))); // salted
        Assert.Equal(SecretHashKind.Invalid, DeviceSecretHasher.KindOf("md5$abc"));
        Assert.False(DeviceSecretHasher.Verify(Utf8(generated), "hmac-sha256$not-base64$x"));
    }

    [Fact]
    public async Task AGeneratedSecret_IsVerifiedWithoutPbkdf2_AChosenOneOnceThenFromTheSlidingCache()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch.AddYears(56));
        using var pool = new SlowHashPool(1, 8, TimeSpan.FromSeconds(5), time);
        var registry = new SqliteDeviceRegistry(db, time, FastIterations, pool: pool);
        var generated = DeviceSecretHasher.Generate();
        await registry.AddAsync("gen", generated, [], None);
        await registry.AddAsync("chosen", "person-chosen-secret", [], None);

        for (var i = 0; i < 100; i++)
        {
            Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("gen", Utf8(generated), None));
        }

        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("gen", Utf8(DeviceSecretHasher.Generate()), None));
        Assert.Equal(0, registry.Pbkdf2Runs);

        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("chosen", Utf8("person-chosen-secret"), None));
        Assert.Equal(1, registry.Pbkdf2Runs);

        // Sliding: used every 50 minutes, the entry outlives the one-hour lifetime many times over.
        for (var i = 0; i < 5; i++)
        {
            time.Advance(TimeSpan.FromMinutes(50));
            Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("chosen", Utf8("person-chosen-secret"), None));
        }

        Assert.Equal(1, registry.Pbkdf2Runs);
        time.Advance(SqliteDeviceRegistry.CacheLifetime + TimeSpan.FromSeconds(1));
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("chosen", Utf8("person-chosen-secret"), None));
        Assert.Equal(2, registry.Pbkdf2Runs);
        Assert.Equal(2, pool.Runs);
    }

    [Fact]
    public async Task APbkdf2HashOfAGeneratedSecret_IsMovedToTheFastHash_AtItsNextLogin()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        var secret = DeviceSecretHasher.Generate();
        await registry.AddAsync("old", "placeholder-secret", [], None);
        await WriteHashAsync(db, "old", DeviceSecretHasher.HashSlow(Utf8(secret), FastIterations)); // as registered before the fast scheme

        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("old", Utf8(secret), None));
        Assert.Equal(1, registry.Upgrades);
        Assert.Equal(SecretHashKind.Fast, DeviceSecretHasher.KindOf(ReadHash(db, "old")));
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("old", Utf8(secret), None));
        Assert.Equal(1, registry.Pbkdf2Runs);
    }

    [Fact]
    public async Task ASecretChangedBehindTheServersBack_StopsMatchingAtOnce_M7()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var server = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        await server.AddAsync("d1", "old-chosen-secret", [], None);
        Assert.Equal(SecretCheck.Match, await server.VerifySecretAsync("d1", Utf8("old-chosen-secret"), None)); // now cached

        // `relay devices set-secret` writes the file through its own registry; the server's cache never hears of it.
        var cli = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        Assert.True(await cli.SetSecretAsync("d1", "new-chosen-secret", None));

        Assert.Equal(SecretCheck.Mismatch, await server.VerifySecretAsync("d1", Utf8("old-chosen-secret"), None));
        Assert.Equal(SecretCheck.Match, await server.VerifySecretAsync("d1", Utf8("new-chosen-secret"), None));
    }

    [Fact]
    public async Task ThePool_RunsAtMostItsConcurrency_RefusesPastItsQueue_AndAfterItsWait()
    {
        var time = new FakeTimeProvider();
        using var pool = new SlowHashPool(1, 1, TimeSpan.FromSeconds(5), time);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var holding = pool.RunAsync(0, _ =>
        {
            entered.SetResult();
            gate.Task.Wait();
            return true;
        }, None).AsTask();
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var waiting = pool.RunAsync(0, _ => true, None).AsTask();
        Assert.Equal(1, pool.Waiting);
        Assert.Null(await pool.RunAsync(0, _ => true, None)); // the queue (1) is full: busy at once
        Assert.Equal(1, pool.Refused);

        time.Advance(TimeSpan.FromSeconds(5)); // the waiter's budget runs out before the slot frees
        Assert.Null(await waiting.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(2, pool.Refused);

        gate.SetResult();
        Assert.True(await holding.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(await pool.RunAsync(0, _ => true, None));
        Assert.Equal(0, pool.Waiting);
        Assert.Equal(2, pool.Runs);
    }

    [Fact]
    public void TheFailureBudget_IsTakenBeforeTheCheck_PerIPv4AddressAndIPv6Slash64()
    {
        var limiter = new MqttAuthRateLimiter(3, new FakeTimeProvider());
        var a = IPAddress.Parse("198.18.0.1");

        // Three attempts in flight at once take the whole budget; the fourth is refused before any failed.
        Assert.True(limiter.TryAcquire(a));
        Assert.True(limiter.TryAcquire(a));
        Assert.True(limiter.TryAcquire(a));
        Assert.False(limiter.TryAcquire(a));
        Assert.False(limiter.TryAcquire(IPAddress.Parse("::ffff:198.18.0.1")));

        // One of them succeeds: its token comes back.
        limiter.Refund(a);
        Assert.True(limiter.TryAcquire(a));

        // A host may use any address of its /64: they share one budget; the next /64 has its own.
        for (var i = 1; i <= 3; i++)
        {
            Assert.True(limiter.TryAcquire(IPAddress.Parse($"2001:db8:1:2::{i:x}")));
        }

        Assert.False(limiter.TryAcquire(IPAddress.Parse("2001:db8:1:2:ffff:1:2:3")));
        Assert.True(limiter.TryAcquire(IPAddress.Parse("2001:db8:1:3::1")));
        Assert.Equal(IPAddress.Parse("2001:db8:1:2::"), MqttAuthRateLimiter.SourceOf(IPAddress.Parse("2001:db8:1:2:aaaa:bbbb:cccc:dddd")));
    }

    private static async Task WriteHashAsync(MqttDatabase db, string id, string hash)
    {
        var statement = new SqlStatement("UPDATE devices SET secret_hash = $s WHERE id = $i", "$i", "$s");
        await db.WriteAsync(
            context =>
            {
                var command = context.Command(statement);
                command.Parameters[0].Value = id;
                command.Parameters[1].Value = hash;
                return command.ExecuteNonQuery();
            },
            None);
    }

    private static string ReadHash(MqttDatabase db, string id)
    {
        using var reader = db.OpenReader();
        using var command = reader.CreateCommand();
        command.CommandText = "SELECT secret_hash FROM devices WHERE id = $i";
        command.Parameters.AddWithValue("$i", id);
        return (string)command.ExecuteScalar()!;
    }
}
