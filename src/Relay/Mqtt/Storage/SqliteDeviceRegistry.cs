using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Mqtt.Storage;

/// <summary>
/// Registered devices in <c>mqtt.db</c>. Secrets are kept only as hashes (<see cref="DeviceSecretHasher"/>):
/// generated secrets as one keyed hash, verified inline in microseconds; person-chosen secrets as PBKDF2,
/// verified on the bounded <see cref="SlowHashPool"/> (busy when full). Because devices reconnect in storms
/// and each PBKDF2 verification costs tens of milliseconds, a successful slow verification is remembered
/// for <see cref="CacheLifetime"/> after its last use, keyed by the device id, a SHA-256 of the presented
/// secret (never the secret itself) and the stored hash, so a secret changed by anyone (the API, or the
/// CLI writing the file while the server runs) stops matching at once. A device that logs in with a
/// generated-form secret still stored as PBKDF2 (registered before the fast scheme) is moved to it.
/// </summary>
internal sealed class SqliteDeviceRegistry : IDeviceRegistry
{
    /// <summary>How long after its last use a verified (device, secret, stored hash) is trusted without PBKDF2.</summary>
    public static readonly TimeSpan CacheLifetime = TimeSpan.FromHours(1);

    /// <summary>Bound of the verification cache.</summary>
    public const int DefaultCacheCapacity = 100_000;

    private static readonly SqlStatement Insert = new(
        "INSERT OR IGNORE INTO devices(id, secret_hash, created_at, grants, disabled, tags) VALUES($i, $s, $t, $g, 0, $tags)",
        "$i", "$s", "$t", "$g", "$tags");

    private static readonly SqlStatement UpdateTags = new("UPDATE devices SET tags = $tags WHERE id = $i", "$i", "$tags");
    private const string Columns = "id, created_at, grants, disabled, tags";

    private static readonly SqlStatement UpdateSecret = new("UPDATE devices SET secret_hash = $s WHERE id = $i", "$i", "$s");
    private static readonly SqlStatement UpgradeSecret = new("UPDATE devices SET secret_hash = $s WHERE id = $i AND secret_hash = $old", "$i", "$s", "$old");
    private static readonly SqlStatement Delete = new("DELETE FROM devices WHERE id = $i", "$i");

    private readonly MqttDatabase _database;
    private readonly TimeProvider _time;
    private readonly int _iterations;
    private readonly int _cacheCapacity;
    private readonly SlowHashPool? _pool;
    private readonly ConcurrentDictionary<CacheKey, long> _verified = new();

    // Bumped by every secret change or removal. A verification that read the old hash must not put its
    // result in the cache after the change invalidated it, so it caches only if this did not move.
    private long _generation;
    private long _pbkdf2Runs;
    private long _upgrades;

    /// <param name="pool">Where PBKDF2 runs; null runs it inline (the CLI, provisioning before the server listens).</param>
    public SqliteDeviceRegistry(MqttDatabase database, TimeProvider time, int iterations = DeviceSecretHasher.DefaultIterations, int cacheCapacity = DefaultCacheCapacity, SlowHashPool? pool = null)
    {
        ArgumentNullException.ThrowIfNull(database);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(cacheCapacity, 0);
        _database = database;
        _time = time;
        _iterations = iterations;
        _cacheCapacity = cacheCapacity;
        _pool = pool;
    }

    /// <summary>PBKDF2 verifications actually computed (cache misses); tests and metrics read it.</summary>
    public long Pbkdf2Runs => Volatile.Read(ref _pbkdf2Runs);

    /// <summary>Stored PBKDF2 hashes of generated-form secrets moved to the fast scheme at login.</summary>
    public long Upgrades => Volatile.Read(ref _upgrades);

    public ValueTask<bool> AddAsync(string deviceId, string secret, IReadOnlyList<MqttGrant> extraGrants, CancellationToken cancellationToken) =>
        AddAsync(deviceId, secret, extraGrants, [], cancellationToken);

    public async ValueTask<bool> AddAsync(string deviceId, string secret, IReadOnlyList<MqttGrant> extraGrants, IReadOnlyList<string> tags, CancellationToken cancellationToken)
    {
        CheckId(deviceId);
        var tagsJson = TagsJson(tags);
        ArgumentNullException.ThrowIfNull(secret);
        ArgumentNullException.ThrowIfNull(extraGrants);
        var hash = DeviceSecretHasher.Hash(Encoding.UTF8.GetBytes(secret), _iterations);
        var grants = JsonSerializer.Serialize(extraGrants.Select(static g => new StoredGrant(g.TopicFilter, (int)g.Actions)).ToArray(), DeviceRegistryJson.Default.StoredGrantArray);
        var createdAt = _time.GetUtcNow();
        return await _database.WriteAsync(
            context =>
            {
                var command = context.Command(Insert);
                command.Parameters[0].Value = deviceId;
                command.Parameters[1].Value = hash;
                command.Parameters[2].Value = createdAt.ToUnixTimeMilliseconds();
                command.Parameters[3].Value = grants;
                command.Parameters[4].Value = tagsJson;
                return command.ExecuteNonQuery() == 1;
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<bool> SetSecretAsync(string deviceId, string secret, CancellationToken cancellationToken)
    {
        CheckId(deviceId);
        ArgumentNullException.ThrowIfNull(secret);
        var hash = DeviceSecretHasher.Hash(Encoding.UTF8.GetBytes(secret), _iterations);
        Invalidate(deviceId);
        var changed = await _database.WriteAsync(
            context =>
            {
                var command = context.Command(UpdateSecret);
                command.Parameters[0].Value = deviceId;
                command.Parameters[1].Value = hash;
                return command.ExecuteNonQuery() == 1;
            },
            cancellationToken).ConfigureAwait(false);
        // Again after the commit: a verification that began between the first invalidation and the
        // commit read the old hash.
        Invalidate(deviceId);
        return changed;
    }

    public async ValueTask<bool> SetTagsAsync(string deviceId, IReadOnlyList<string> tags, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deviceId);
        var tagsJson = TagsJson(tags);
        if (!DeviceId.IsValid(deviceId))
        {
            return false;
        }

        return await _database.WriteAsync(
            context =>
            {
                var command = context.Command(UpdateTags);
                command.Parameters[0].Value = deviceId;
                command.Parameters[1].Value = tagsJson;
                return command.ExecuteNonQuery() == 1;
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<bool> RemoveAsync(string deviceId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deviceId);
        Invalidate(deviceId);
        var removed = await _database.WriteAsync(
            context =>
            {
                var command = context.Command(Delete);
                command.Parameters[0].Value = deviceId;
                return command.ExecuteNonQuery() == 1;
            },
            cancellationToken).ConfigureAwait(false);
        Invalidate(deviceId);
        return removed;
    }

    public ValueTask<DeviceRecord?> FindAsync(string deviceId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deviceId);
        cancellationToken.ThrowIfCancellationRequested();
        if (!DeviceId.IsValid(deviceId))
        {
            return ValueTask.FromResult<DeviceRecord?>(null);
        }

        using var lease = _database.RentReader();
        using var command = lease.Connection.CreateCommand();
        command.CommandText = $"SELECT {Columns} FROM devices WHERE id = $i";
        command.Parameters.AddWithValue("$i", deviceId);
        using var reader = command.ExecuteReader();
        return ValueTask.FromResult(reader.Read() ? ReadRecord(reader) : null);
    }

    public ValueTask<IReadOnlyList<DeviceRecord>> ListAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var connection = _database.OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT {Columns} FROM devices ORDER BY id";
        return ValueTask.FromResult(ReadAll(command));
    }

    public ValueTask<IReadOnlyList<DeviceRecord>> ListAsync(string? tag, string? after, int limit, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        cancellationToken.ThrowIfCancellationRequested();
        using var lease = _database.RentReader();
        using var command = lease.Connection.CreateCommand();
        // Keyset paging on the primary key: each page is one index range scan, and a device added or
        // removed between pages neither repeats nor skips the others. The tag filter scans each row's
        // JSON array (json_each); fine for tens of thousands of devices, and it keeps tags in one column
        // instead of a second table that every add, delete and rename would have to keep in step.
        command.CommandText = $"""
            SELECT {Columns} FROM devices
            WHERE ($after IS NULL OR id > $after)
              AND ($tag IS NULL OR EXISTS (SELECT 1 FROM json_each(devices.tags) WHERE json_each.value = $tag))
            ORDER BY id LIMIT $limit
            """;
        command.Parameters.AddWithValue("$after", (object?)after ?? DBNull.Value);
        command.Parameters.AddWithValue("$tag", (object?)tag ?? DBNull.Value);
        command.Parameters.AddWithValue("$limit", limit);
        return ValueTask.FromResult(ReadAll(command));
    }

    public async ValueTask<SecretCheck> VerifySecretAsync(string deviceId, ReadOnlyMemory<byte> secretUtf8, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deviceId);
        cancellationToken.ThrowIfCancellationRequested();
        var stored = DeviceId.IsValid(deviceId) ? ReadSecretHash(deviceId) : null;
        if (stored is null)
        {
            // As long as a wrong generated secret takes: the answer's timing does not say whether the id exists.
            DeviceSecretHasher.VerifyNothing(secretUtf8.Span);
            return SecretCheck.UnknownDevice;
        }

        switch (DeviceSecretHasher.KindOf(stored))
        {
            case SecretHashKind.Fast:
                return DeviceSecretHasher.Verify(secretUtf8.Span, stored) ? SecretCheck.Match : SecretCheck.Mismatch;
            case SecretHashKind.Invalid:
                return SecretCheck.Mismatch;
        }

        var generation = Interlocked.Read(ref _generation);
        var key = CacheKey.Create(deviceId, secretUtf8.Span, stored);
        var now = _time.GetUtcNow().UtcTicks;
        if (_verified.TryGetValue(key, out var expires) && now < expires)
        {
            // Sliding: a device that keeps reconnecting stays cheap.
            _verified.TryUpdate(key, now + CacheLifetime.Ticks, expires);
            return SecretCheck.Match;
        }

        bool ok;
        if (_pool is null)
        {
            Interlocked.Increment(ref _pbkdf2Runs);
            ok = DeviceSecretHasher.Verify(secretUtf8.Span, stored);
        }
        else
        {
            var result = await _pool.RunAsync((secretUtf8, stored, this), static s =>
            {
                Interlocked.Increment(ref s.Item3._pbkdf2Runs);
                return DeviceSecretHasher.Verify(s.secretUtf8.Span, s.stored);
            }, cancellationToken).ConfigureAwait(false);
            if (result is not { } verified)
            {
                return SecretCheck.Busy;
            }

            ok = verified;
        }

        if (!ok)
        {
            return SecretCheck.Mismatch;
        }

        if (DeviceSecretHasher.IsGeneratedForm(secretUtf8.Span) && await UpgradeAsync(deviceId, stored, secretUtf8, cancellationToken).ConfigureAwait(false))
        {
            return SecretCheck.Match;
        }

        if (_cacheCapacity > 0)
        {
            Remember(key, now + CacheLifetime.Ticks, generation);
        }

        return SecretCheck.Match;
    }

    // Only if the row still holds the hash we verified: a rotation in between wins.
    private async ValueTask<bool> UpgradeAsync(string deviceId, string stored, ReadOnlyMemory<byte> secretUtf8, CancellationToken cancellationToken)
    {
        var fast = DeviceSecretHasher.HashFast(secretUtf8.Span);
        var upgraded = await _database.WriteAsync(
            context =>
            {
                var command = context.Command(UpgradeSecret);
                command.Parameters[0].Value = deviceId;
                command.Parameters[1].Value = fast;
                command.Parameters[2].Value = stored;
                return command.ExecuteNonQuery() == 1;
            },
            cancellationToken).ConfigureAwait(false);
        if (upgraded)
        {
            Interlocked.Increment(ref _upgrades);
        }

        return upgraded;
    }

    private static void CheckId(string deviceId)
    {
        if (!DeviceId.IsValid(deviceId))
        {
            throw new ArgumentException($"device id '{deviceId}' must match [A-Za-z0-9._-]{{1,{DeviceId.MaxLength}}}", nameof(deviceId));
        }
    }

    private static string TagsJson(IReadOnlyList<string> tags)
    {
        ArgumentNullException.ThrowIfNull(tags);
        if (DeviceTags.Validate(tags) is { } problem)
        {
            throw new ArgumentException(problem, nameof(tags));
        }

        return JsonSerializer.Serialize(DeviceTags.Normalize(tags), DeviceRegistryJson.Default.StringArray);
    }

    private static IReadOnlyList<DeviceRecord> ReadAll(Microsoft.Data.Sqlite.SqliteCommand command)
    {
        using var reader = command.ExecuteReader();
        var result = new List<DeviceRecord>();
        while (reader.Read())
        {
            result.Add(ReadRecord(reader));
        }

        return result;
    }

    private static DeviceRecord ReadRecord(Microsoft.Data.Sqlite.SqliteDataReader reader)
    {
        var grants = JsonSerializer.Deserialize(reader.GetString(2), DeviceRegistryJson.Default.StoredGrantArray) ?? [];
        return new DeviceRecord(
            reader.GetString(0),
            DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(1)),
            [.. grants.Select(static g => new MqttGrant(g.Filter, (MqttAction)g.Actions))],
            reader.GetBoolean(3),
            JsonSerializer.Deserialize(reader.GetString(4), DeviceRegistryJson.Default.StringArray) ?? []);
    }

    private string? ReadSecretHash(string deviceId)
    {
        using var lease = _database.RentReader();
        using var command = lease.Connection.CreateCommand();
        command.CommandText = "SELECT secret_hash FROM devices WHERE id = $i";
        command.Parameters.AddWithValue("$i", deviceId);
        return command.ExecuteScalar() as string;
    }

    private void Remember(CacheKey key, long expires, long generation)
    {
        if (_verified.Count >= _cacheCapacity)
        {
            Trim();
        }

        _verified[key] = expires;
        if (Interlocked.Read(ref _generation) != generation)
        {
            // A secret changed while we verified against the hash we had read: the entry may be stale.
            _verified.TryRemove(key, out _);
        }
    }

    // Full: drop what expired, and if that is not enough, half of the rest (arbitrary entries; a
    // dropped entry costs one more PBKDF2, never a wrong answer).
    private void Trim()
    {
        var now = _time.GetUtcNow().UtcTicks;
        foreach (var (key, expires) in _verified)
        {
            if (expires <= now)
            {
                _verified.TryRemove(key, out _);
            }
        }

        if (_verified.Count >= _cacheCapacity)
        {
            var drop = Math.Max(1, _verified.Count / 2);
            foreach (var key in _verified.Keys)
            {
                if (drop-- <= 0)
                {
                    break;
                }

                _verified.TryRemove(key, out _);
            }
        }
    }

    private void Invalidate(string deviceId)
    {
        Interlocked.Increment(ref _generation);
        foreach (var key in _verified.Keys)
        {
            if (string.Equals(key.DeviceId, deviceId, StringComparison.Ordinal))
            {
                _verified.TryRemove(key, out _);
            }
        }
    }

    /// <summary>
    /// The device, a SHA-256 of the secret it presented (four longs, no per-lookup array) and the stored hash
    /// it was checked against: a hash replaced behind our back (the CLI writes the file) never matches.
    /// </summary>
    private readonly record struct CacheKey(string DeviceId, long H0, long H1, long H2, long H3, string Stored)
    {
        public static CacheKey Create(string deviceId, ReadOnlySpan<byte> secret, string stored)
        {
            Span<byte> hash = stackalloc byte[32];
            SHA256.HashData(secret, hash);
            var words = MemoryMarshal.Cast<byte, long>(hash);
            return new CacheKey(deviceId, words[0], words[1], words[2], words[3], stored);
        }
    }
}

/// <summary>The <c>grants</c> column: <c>[{"f":"filter","a":3}]</c>.</summary>
internal sealed record StoredGrant(
    [property: JsonPropertyName("f")] string Filter,
    [property: JsonPropertyName("a")] int Actions);

[JsonSerializable(typeof(StoredGrant[]))]
[JsonSerializable(typeof(string[]))]
internal sealed partial class DeviceRegistryJson : JsonSerializerContext;
