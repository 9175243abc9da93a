using Microsoft.Data.Sqlite;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Tests.Mqtt.Storage;

namespace Relay.Server.Tests.Push.Api;

public sealed class DeviceRegistryTagsTests
{
    private const int FastIterations = 1000;
    private static readonly CancellationToken None = CancellationToken.None;

    [Fact]
    public async Task Tags_AddSetFilterAndPage_SurviveReopen()
    {
        using var dir = new TempDataDirectory();
        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
            Assert.True(await registry.AddAsync("a", "s", [], ["lab", "floor:1", "lab"], None));
            Assert.True(await registry.AddAsync("b", "s", [], None));
            Assert.True(await registry.AddAsync("c", "s", [], ["lab"], None));
            Assert.True(await registry.AddAsync("d", "s", [], ["labx"], None));
            Assert.True(await registry.SetTagsAsync("b", ["lab"], None));
            Assert.False(await registry.SetTagsAsync("nobody", ["lab"], None));
            await Assert.ThrowsAsync<ArgumentException>(async () => await registry.SetTagsAsync("a", ["bad tag"], None));
            await Assert.ThrowsAsync<ArgumentException>(async () => await registry.AddAsync("e", "s", [], [new string('x', 65)], None));
        }

        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
            Assert.Equal(["lab", "floor:1"], (await registry.FindAsync("a", None))!.Tags);
            Assert.Equal(["a", "b", "c"], (await registry.ListAsync("lab", null, 10, None)).Select(d => d.Id));
            Assert.Equal(["d"], (await registry.ListAsync("labx", null, 10, None)).Select(d => d.Id));

            // Keyset paging: two, then the rest after the last id.
            var first = await registry.ListAsync(null, null, 2, None);
            Assert.Equal(["a", "b"], first.Select(d => d.Id));
            Assert.Equal(["c", "d"], (await registry.ListAsync(null, first[^1].Id, 2, None)).Select(d => d.Id));
            Assert.Empty(await registry.ListAsync(null, "d", 2, None));
            Assert.Empty((await registry.FindAsync("e", None))?.Tags ?? []);
        }
    }

    [Fact]
    public async Task SchemaVersion1_IsUpgraded_DevicesKeptWithNoTags_SessionsWithNoOwner()
    {
        using var dir = new TempDataDirectory();
        var path = Path.Combine(dir.Path, MqttDatabase.FileName);
        // A version 1 file as the MQTT release created it (devices without tags, sessions without owners).
        using (var connection = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = """
                CREATE TABLE sessions(client_id TEXT NOT NULL PRIMARY KEY, expiry_seconds INTEGER NOT NULL,
                    disconnected_at INTEGER NULL) WITHOUT ROWID;
                CREATE TABLE subscriptions(client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
                    no_local INTEGER NOT NULL, retain_as_published INTEGER NOT NULL, retain_handling INTEGER NOT NULL,
                    subscription_id INTEGER NOT NULL, PRIMARY KEY(client_id, filter)) WITHOUT ROWID;
                CREATE TABLE messages(seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, topic TEXT NOT NULL,
                    payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, expires_at INTEGER NULL,
                    properties BLOB NULL, packet_id INTEGER NOT NULL DEFAULT 0, released INTEGER NOT NULL DEFAULT 0);
                CREATE INDEX messages_by_client ON messages(client_id, seq);
                CREATE TABLE retained(topic TEXT NOT NULL PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL,
                    expires_at INTEGER NULL, properties BLOB NULL) WITHOUT ROWID;
                CREATE TABLE devices(id TEXT NOT NULL PRIMARY KEY, secret_hash TEXT NOT NULL, created_at INTEGER NOT NULL,
                    grants TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
                INSERT INTO devices VALUES('old', 'x', 0, '[]', 0);
                INSERT INTO sessions VALUES('old', 3600, 0);
                PRAGMA user_version = 1;
                """;
            command.ExecuteNonQuery();
        }

        await using var db = MqttDatabase.Open(dir.Path);
        var registry = new SqliteDeviceRegistry(db, TimeProvider.System, FastIterations);
        var old = await registry.FindAsync("old", None);
        Assert.NotNull(old);
        Assert.Empty(old.Tags);
        Assert.True(await registry.SetTagsAsync("old", ["t"], None));
        Assert.Equal(["old"], (await registry.ListAsync("t", null, 5, None)).Select(d => d.Id));

        // Version 3: sessions from before have no owner; the next principal to resume one claims it.
        var sessions = new Relay.Server.Mqtt.Storage.SqliteMqttSessionStore(db);
        Assert.Null(Assert.Single(await sessions.LoadAllAsync(None)).Owner);
        await sessions.UpsertSessionAsync("old", 3600, null, "Device:old", None);
        Assert.Equal("Device:old", Assert.Single(await sessions.LoadAllAsync(None)).Owner);
    }
}
