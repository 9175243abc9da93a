using System.Text;
using Microsoft.Data.Sqlite;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Storage;

namespace Relay.Server.Tests.Mqtt.Storage;

public sealed class SqliteMqttSessionStoreTests
{
    private static readonly CancellationToken None = CancellationToken.None;

    private static StoredMessage Message(string topic, string payload, byte qos = 1, MqttMessageProperties? properties = null, DateTimeOffset? expires = null) =>
        new(topic, Encoding.UTF8.GetBytes(payload), qos, Retain: false, expires, properties);

    [Fact]
    public async Task Sessions_Subscriptions_AndMessages_RoundTrip()
    {
        using var dir = new TempDataDirectory();
        var disconnected = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_123);
        var expires = DateTimeOffset.FromUnixTimeMilliseconds(1_800_000_000_456);
        var properties = new MqttMessageProperties(1, "application/json", "devices/d1/reply", new byte[] { 1, 2, 3 }, [new("k", "v"), new("k", "v2"), new("ü", "")]);
        long[] sequences;
        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var store = new SqliteMqttSessionStore(db);
            await store.UpsertSessionAsync("c1", 3600, null, null, None);
            await store.UpsertSessionAsync("c1", 7200, disconnected, null, None); // update, not a second row
            await store.UpsertSubscriptionAsync("c1", new PersistedSubscription("a/+/b", 2, true, true, 1, 42), None);
            await store.UpsertSubscriptionAsync("c1", new PersistedSubscription("$share/g/x/#", 1, false, false, 2, 0), None);
            await store.UpsertSubscriptionAsync("c1", new PersistedSubscription("a/+/b", 1, false, true, 0, 7), None); // replaces
            await store.UpsertSubscriptionAsync("c1", new PersistedSubscription("gone", 0, false, false, 0, 0), None);
            await store.RemoveSubscriptionAsync("c1", "gone", None);
            sequences = await store.EnqueueAsync([("c1", Message("t/1", "one", 1, properties, expires)), ("c1", Message("t/2", "two", 2))], None);
            var third = await store.EnqueueAsync([("c1", Message("t/3", "three"))], None);
            await store.MarkSentAsync("c1", sequences[1], 17, released: true, None);
            await store.RemoveMessageAsync("c1", third[0], None);
            await store.UpsertSessionAsync("c2", 10, null, null, None);
        }

        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var sessions = await new SqliteMqttSessionStore(db).LoadAllAsync(None);
            Assert.Equal(2, sessions.Count);
            var c1 = Assert.Single(sessions, s => s.ClientId == "c1");
            Assert.Equal(7200u, c1.ExpiryIntervalSeconds);
            Assert.Equal(disconnected, c1.DisconnectedAt);
            Assert.Equal(
                [new PersistedSubscription("$share/g/x/#", 1, false, false, 2, 0), new PersistedSubscription("a/+/b", 1, false, true, 0, 7)],
                c1.Subscriptions);
            Assert.Equal(2, c1.Messages.Count);
            var first = c1.Messages[0];
            Assert.Equal(sequences[0], first.Sequence);
            Assert.Equal("t/1", first.Message.Topic);
            Assert.Equal("one", Encoding.UTF8.GetString(first.Message.Payload.Span));
            Assert.Equal(1, first.Message.QoS);
            Assert.Equal(expires, first.Message.ExpiresAt);
            Assert.Equal(0, first.PacketId);
            Assert.False(first.Released);
            var p = first.Message.Properties!;
            Assert.Equal((byte)1, p.PayloadFormatIndicator);
            Assert.Equal("application/json", p.ContentType);
            Assert.Equal("devices/d1/reply", p.ResponseTopic);
            Assert.Equal(new byte[] { 1, 2, 3 }, p.CorrelationData!.Value.ToArray());
            Assert.Equal([new("k", "v"), new("k", "v2"), new("ü", "")], p.UserProperties!);
            var second = c1.Messages[1];
            Assert.Equal(sequences[1], second.Sequence);
            Assert.Equal(17, second.PacketId);
            Assert.True(second.Released);
            Assert.Null(second.Message.Properties);
            Assert.Null(second.Message.ExpiresAt);
            var c2 = Assert.Single(sessions, s => s.ClientId == "c2");
            Assert.Null(c2.DisconnectedAt);
            Assert.Empty(c2.Messages);
        }
    }

    [Fact]
    public async Task DeleteSession_RemovesItsSubscriptionsAndMessages_Only()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var store = new SqliteMqttSessionStore(db);
        foreach (var id in new[] { "a", "b" })
        {
            await store.UpsertSessionAsync(id, 60, null, null, None);
            await store.UpsertSubscriptionAsync(id, new PersistedSubscription("x", 1, false, false, 0, 0), None);
            await store.EnqueueAsync([(id, Message("x", id))], None);
        }

        await store.DeleteSessionAsync("a", None);
        var sessions = await store.LoadAllAsync(None);
        var b = Assert.Single(sessions);
        Assert.Equal("b", b.ClientId);
        Assert.Single(b.Subscriptions);
        Assert.Single(b.Messages);

        using var reader = db.OpenReader();
        using var count = reader.CreateCommand();
        count.CommandText = "SELECT (SELECT count(*) FROM messages WHERE client_id='a') + (SELECT count(*) FROM subscriptions WHERE client_id='a')";
        Assert.Equal(0L, count.ExecuteScalar());
    }

    [Fact]
    public async Task Sequences_IncreasePerClient_AndLoadKeepsEnqueueOrder_EvenAfterTheNewestIsRemoved()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var store = new SqliteMqttSessionStore(db);
        await store.UpsertSessionAsync("c", 60, null, null, None);
        var fanOut = Enumerable.Range(0, 50).Select(i => ("c", Message("t", i.ToString()))).ToArray();
        var sequences = await store.EnqueueAsync(fanOut, None);
        Assert.Equal(sequences.Order(), sequences);
        Assert.Equal(sequences.Length, sequences.Distinct().Count());

        // The newest is removed; a new message must still sort after every earlier one and never reuse its sequence.
        await store.RemoveMessageAsync("c", sequences[^1], None);
        var next = (await store.EnqueueAsync([("c", Message("t", "next"))], None))[0];
        Assert.True(next > sequences[^1]);

        var loaded = Assert.Single(await store.LoadAllAsync(None)).Messages;
        Assert.Equal([.. Enumerable.Range(0, 49).Select(i => i.ToString()), "next"], loaded.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)));
    }

    [Fact]
    public async Task FanOut_ToManyClients_IsOneTransaction()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var store = new SqliteMqttSessionStore(db);
        var shared = Message("broadcast", "hello");
        var pairs = Enumerable.Range(0, 200).Select(i => ($"client-{i}", shared)).ToArray();
        foreach (var (id, _) in pairs)
        {
            await store.UpsertSessionAsync(id, 60, null, null, None);
        }

        var before = db.Commits;
        var sequences = await store.EnqueueAsync(pairs, None);
        Assert.Equal(before + 1, db.Commits);
        Assert.Equal(200, sequences.Length);
        var sessions = await store.LoadAllAsync(None);
        Assert.All(sessions, s => Assert.Equal("broadcast", Assert.Single(s.Messages).Message.Topic));
    }

    [Fact]
    public async Task HundredsOfConcurrentEnqueues_AllComplete_AreAllPersisted_AndShareCommits()
    {
        using var dir = new TempDataDirectory();
        const int Callers = 400;
        long[][] results;
        long commits;
        await using (var db = MqttDatabase.Open(dir.Path, queueCapacity: 64)) // smaller than the callers: back-pressure path too
        {
            var store = new SqliteMqttSessionStore(db);
            for (var c = 0; c < 8; c++)
            {
                await store.UpsertSessionAsync($"c{c}", 60, null, null, None);
            }

            var before = db.Commits;
            using var start = new ManualResetEventSlim();
            var tasks = Enumerable.Range(0, Callers).Select(i => Task.Run(async () =>
            {
                start.Wait();
                return await store.EnqueueAsync([($"c{i % 8}", Message("t", i.ToString()))], None);
            })).ToArray();
            start.Set();
            results = await Task.WhenAll(tasks);
            commits = db.Commits - before;
        }

        Assert.All(results, r => Assert.Single(r));
        Assert.Equal(Callers, results.Select(r => r[0]).Distinct().Count());
        // Group commit is the point; it cannot be guaranteed how callers interleave, but it can be
        // guaranteed there were never more commits than callers.
        Assert.InRange(commits, 1, Callers);

        await using (var db = MqttDatabase.Open(dir.Path))
        {
            var sessions = await new SqliteMqttSessionStore(db).LoadAllAsync(None);
            var payloads = sessions.SelectMany(s => s.Messages).Select(m => int.Parse(Encoding.UTF8.GetString(m.Message.Payload.Span))).Order();
            Assert.Equal(Enumerable.Range(0, Callers), payloads);
            foreach (var session in sessions)
            {
                Assert.Equal(session.Messages.Select(m => m.Sequence).Order(), session.Messages.Select(m => m.Sequence));
            }
        }
    }

    [Fact]
    public async Task WhatAKilledProcessLeavesOnDisk_HoldsEveryAcknowledgedWrite()
    {
        // A SIGKILL leaves the database and its WAL exactly as the kernel has them: copy both while the
        // store is still open and never flushed, checkpointed or closed, and open the copy.
        using var dir = new TempDataDirectory();
        using var copy = new TempDataDirectory();
        var db = MqttDatabase.Open(dir.Path);
        try
        {
            var store = new SqliteMqttSessionStore(db);
            await store.UpsertSessionAsync("dev", 3600, null, null, None);
            for (var i = 0; i < 100; i++)
            {
                await store.EnqueueAsync([("dev", Message("devices/dev/cmd", i.ToString()))], None);
            }

            var retained = new SqliteMqttRetainedStore(db, TimeProvider.System);
            await retained.SetAsync(new StoredMessage("status", "up"u8.ToArray(), 1, true, null, null), None);

            var wal = Path.Combine(dir.Path, MqttDatabase.FileName + "-wal");
            Assert.True(new FileInfo(wal).Length > 0, "the writes should still be in the WAL, not checkpointed");
            File.Copy(Path.Combine(dir.Path, MqttDatabase.FileName), Path.Combine(copy.Path, MqttDatabase.FileName));
            File.Copy(wal, Path.Combine(copy.Path, MqttDatabase.FileName + "-wal"));
        }
        finally
        {
            await db.DisposeAsync();
        }

        await using var recovered = MqttDatabase.Open(copy.Path);
        var session = Assert.Single(await new SqliteMqttSessionStore(recovered).LoadAllAsync(None));
        Assert.Equal(Enumerable.Range(0, 100).Select(i => i.ToString()), session.Messages.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)));
        Assert.Equal("status", Assert.Single(await new SqliteMqttRetainedStore(recovered, TimeProvider.System).LoadAllAsync(None)).Topic);
    }

    [Fact]
    public async Task NewDatabase_HasTheSchemaVersion_WalAndNormalSync()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        using var reader = db.OpenReader();
        using var command = reader.CreateCommand();
        command.CommandText = "PRAGMA user_version";
        Assert.Equal((long)MqttDatabase.SchemaVersion, command.ExecuteScalar());
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", command.ExecuteScalar());
    }

    [Fact]
    public async Task DatabaseFromANewerBuild_IsRefused_WithoutTouchingIt()
    {
        using var dir = new TempDataDirectory();
        var path = Path.Combine(dir.Path, MqttDatabase.FileName);
        using (var connection = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "CREATE TABLE future(x); PRAGMA user_version = 99";
            command.ExecuteNonQuery();
        }

        var error = Assert.Throws<InvalidOperationException>(() => MqttDatabase.Open(dir.Path));
        Assert.Contains("schema version 99", error.Message, StringComparison.Ordinal);
        using (var connection = new SqliteConnection($"Data Source={path};Pooling=False;Mode=ReadOnly"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = "SELECT count(*) FROM sqlite_master WHERE name = 'messages'";
            Assert.Equal(0L, command.ExecuteScalar());
        }
    }

    [Fact]
    public async Task AFailingOperation_FailsOnlyItsCaller_NotItsBatchMates()
    {
        using var dir = new TempDataDirectory();
        await using var db = MqttDatabase.Open(dir.Path);
        var store = new SqliteMqttSessionStore(db);
        var bad = new SqlStatement("INSERT INTO no_such_table VALUES(1)");
        using var start = new ManualResetEventSlim();
        var good = Enumerable.Range(0, 20).Select(i => Task.Run(async () =>
        {
            start.Wait();
            await store.UpsertSessionAsync($"s{i}", 1, null, null, None);
        })).ToList();
        var failing = Task.Run(async () =>
        {
            start.Wait();
            await db.WriteAsync(context => context.Command(bad).ExecuteNonQuery(), None);
        });
        start.Set();
        await Task.WhenAll(good);
        await Assert.ThrowsAsync<SqliteException>(() => failing);
        Assert.Equal(20, (await store.LoadAllAsync(None)).Count);
    }

    [Fact]
    public async Task Dispose_CommitsWhatWasQueued_ThenRefusesWrites()
    {
        using var dir = new TempDataDirectory();
        var db = MqttDatabase.Open(dir.Path);
        var store = new SqliteMqttSessionStore(db);
        var pending = Enumerable.Range(0, 50).Select(i => store.UpsertSessionAsync($"s{i}", 1, null, null, None).AsTask()).ToArray();
        await db.DisposeAsync();
        await Task.WhenAll(pending);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => store.UpsertSessionAsync("late", 1, null, null, None).AsTask());
        await using var reopened = MqttDatabase.Open(dir.Path);
        Assert.Equal(50, (await new SqliteMqttSessionStore(reopened).LoadAllAsync(None)).Count);
    }

    [Fact]
    public void PropertiesCodec_RejectsDamagedRows_InsteadOfReadingPastThem()
    {
        var encoded = MqttPropertiesCodec.Encode(new MqttMessageProperties(null, "ct", null, new byte[] { 9 }, [new("a", "b")]))!;
        Assert.True(MqttPropertiesCodec.TryDecode(encoded, out var decoded));
        Assert.Equal("ct", decoded!.ContentType);
        for (var length = 1; length < encoded.Length; length++)
        {
            Assert.False(MqttPropertiesCodec.TryDecode(encoded.AsSpan(0, length), out _));
        }

        Assert.False(MqttPropertiesCodec.TryDecode([.. encoded, 0], out _));
        Assert.Null(MqttPropertiesCodec.Encode(new MqttMessageProperties(null, null, null, null, [])));
    }
}
