using Microsoft.Data.Sqlite;
using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>
/// The security review's M4: commands.db was never pruned. Final commands older than
/// <c>Relay:Push:RetainFinishedDays</c> now go, with their transitions, in bounded batches, from the command
/// loop's sweep at most once an hour; new files use incremental auto-vacuum so the space comes back.
/// </summary>
public sealed class CommandRetentionTests
{
    [Fact]
    public async Task Final_commands_past_the_retention_are_deleted_with_their_transitions_at_most_hourly()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var start = CommandLoopHarness.Start;

        // Default retention: 30 days. 2,500 final commands of 31 days ago (more than one batch), one of 29
        // days ago, and a command of 31 days ago that is not final (never pruned, whatever its age).
        var old = await StoreAsync(h, start - TimeSpan.FromDays(31), 2500, final: true);
        var recent = await StoreAsync(h, start - TimeSpan.FromDays(29), 1, final: true);
        var notFinal = await StoreAsync(h, start - TimeSpan.FromDays(31), 1, final: false);

        // The first sweep prunes.
        h.Time.Advance(TimeSpan.FromSeconds(1));
        await Poll.UntilAsync(() => h.Store.Find(old[0]) is null && h.Store.Find(old[^1]) is null, "the old final commands to be pruned");
        Assert.All(old, id => Assert.Null(h.Store.Find(id)));
        Assert.NotNull(h.Store.Find(recent[0]));
        Assert.NotNull(h.Store.Find(notFinal[0]));
        Assert.Equal(0, Scalar(h, "SELECT count(*) FROM transitions WHERE command_seq NOT IN (SELECT seq FROM commands)"));
        Assert.Equal(3, Scalar(h, "SELECT count(*) FROM transitions"));

        // Another old command is found only by the next prune, an hour after the first. A command that
        // expires at 59 min shows that a sweep ran then (and pruned nothing).
        var later = await StoreAsync(h, start - TimeSpan.FromDays(31), 1, final: true);
        var marker = await h.EnqueueAsync("d2", "marker", ttlSeconds: (59 * 60) - 1);
        h.Time.Advance(TimeSpan.FromMinutes(59) - TimeSpan.FromSeconds(1));
        await h.Sink.WaitAsync(marker.Id, CommandState.Expired);
        await h.DrainAsync();
        Assert.NotNull(h.Store.Find(later[0]));

        h.Time.Advance(TimeSpan.FromMinutes(1) + TimeSpan.FromSeconds(1));
        await Poll.UntilAsync(() => h.Store.Find(later[0]) is null, "the hourly prune");
        Assert.NotNull(h.Store.Find(recent[0]));
    }

    [Fact]
    public async Task A_new_commands_db_reclaims_space_incrementally()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-vacuum-").FullName;
        try
        {
            await using (CommandStore.Open(directory))
            {
                // auto_vacuum can only be chosen before the first table exists: 2 = INCREMENTAL.
                using var connection = new SqliteConnection($"Data Source={Path.Combine(directory, CommandStore.FileName)};Mode=ReadOnly;Pooling=False");
                connection.Open();
                using var command = connection.CreateCommand();
                command.CommandText = "PRAGMA auto_vacuum";
                Assert.Equal(2L, command.ExecuteScalar());
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_prune_deletes_in_batches_and_gives_the_pages_back()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-prune-").FullName;
        try
        {
            await using var store = CommandStore.Open(directory);
            var at = DateTimeOffset.UnixEpoch.AddYears(50);
            var entries = Enumerable.Range(0, 2500).Select(_ => new CommandEntry
            {
                Id = Guid.NewGuid().ToString("N"),
                Device = "d1",
                Name = "big",
                Payload = new byte[4096],
                Binary = true,
                QoS = 1,
                CreatedAt = at,
                ExpiresAt = at.AddHours(1),
                State = CommandState.Queued,
                UpdatedAt = at,
            }).ToList();
            await store.InsertAsync(entries, CancellationToken.None);
            await store.ApplyAsync([.. entries.Select(e => (e.Seq, CommandState.Canceled, at, (string?)null))], CancellationToken.None);
            var before = Pragma(directory, "page_count");

            Assert.Equal(CommandRetention.PruneBatch, await store.PruneAsync(at.AddDays(1), CommandRetention.PruneBatch, CancellationToken.None));
            Assert.Equal(CommandRetention.PruneBatch, await store.PruneAsync(at.AddDays(1), CommandRetention.PruneBatch, CancellationToken.None));
            Assert.Equal(500, await store.PruneAsync(at.AddDays(1), CommandRetention.PruneBatch, CancellationToken.None));
            Assert.Equal(0, await store.PruneAsync(at.AddDays(1), CommandRetention.PruneBatch, CancellationToken.None));
            Assert.True(Pragma(directory, "freelist_count") > 2000);

            while (await store.VacuumAsync(2048, CancellationToken.None) > 0)
            {
            }

            Assert.Equal(0, Pragma(directory, "freelist_count"));
            Assert.True(Pragma(directory, "page_count") < before / 10, $"{Pragma(directory, "page_count")} pages left of {before}");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_version_1_file_is_migrated_in_place_to_the_current_version_and_its_commands_count_against_no_token()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-v1-").FullName;
        try
        {
            using (var v1 = new SqliteConnection($"Data Source={Path.Combine(directory, CommandStore.FileName)};Pooling=False"))
            {
                v1.Open();
                using var create = v1.CreateCommand();
                create.CommandText = """
                    CREATE TABLE commands(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, device TEXT NOT NULL, name TEXT NOT NULL,
                        binary INTEGER NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
                        state INTEGER NOT NULL, updated_at INTEGER NOT NULL, result TEXT NULL);
                    CREATE INDEX commands_by_device ON commands(device, seq);
                    CREATE INDEX commands_active ON commands(seq) WHERE state < 2;
                    CREATE TABLE transitions(command_seq INTEGER NOT NULL, state INTEGER NOT NULL, at INTEGER NOT NULL, result TEXT NULL);
                    CREATE INDEX transitions_by_command ON transitions(command_seq);
                    INSERT INTO commands(id, device, name, binary, payload, qos, created_at, expires_at, state, updated_at) VALUES('old1', 'd1', 'blink', 0, X'7B7D', 1, 0, 4102444800000, 0, 0);
                    INSERT INTO transitions VALUES(1, 0, 0, NULL);
                    PRAGMA user_version=1;
                    """;
                create.ExecuteNonQuery();
            }

            await using (var store = CommandStore.Open(directory))
            {
                var old = Assert.Single(store.LoadActive());
                Assert.Equal("old1", old.Id);
                Assert.Null(old.Token);
                Assert.Equal(2, old.PayloadLength);
                Assert.Equal("{}"u8.ToArray(), store.LoadPayload(old.Seq));
                var fresh = new CommandEntry { Id = "new1", Device = "d1", Name = "blink", Payload = "{}"u8.ToArray(), QoS = 1, CreatedAt = DateTimeOffset.UnixEpoch, ExpiresAt = DateTimeOffset.UnixEpoch.AddDays(1), UpdatedAt = DateTimeOffset.UnixEpoch, Token = "t1" };
                await store.InsertAsync([fresh], CancellationToken.None);
                Assert.Equal("t1", store.Find("new1")!.Value.Entry.Token);
            }

            Assert.Equal(3, Pragma(directory, "user_version"));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static long Pragma(string directory, string name)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(directory, CommandStore.FileName)};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA " + name;
        return (long)command.ExecuteScalar()!;
    }

    /// <summary>Commands written straight to the store with times of <paramref name="at"/>, as an older server would have left them.</summary>
    internal static async Task<List<string>> StoreAsync(CommandLoopHarness h, DateTimeOffset at, int count, bool final)
    {
        var entries = Enumerable.Range(0, count).Select(_ => new CommandEntry
        {
            Id = Guid.NewGuid().ToString("N"),
            Device = "d1",
            Name = "old",
            Payload = "{\"old\":true}"u8.ToArray(),
            QoS = 1,
            CreatedAt = at,
            ExpiresAt = at.AddHours(1),
            State = CommandState.Queued,
            UpdatedAt = at,
        }).ToList();
        await h.Store.InsertAsync(entries, CancellationToken.None);
        if (final)
        {
            await h.Store.ApplyAsync([.. entries.Select(e => (e.Seq, CommandState.Expired, at, (string?)null))], CancellationToken.None);
        }

        return [.. entries.Select(static e => e.Id)];
    }

    private static long Scalar(CommandLoopHarness h, string sql)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(h.DataDirectory, CommandStore.FileName)};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return (long)command.ExecuteScalar()!;
    }
}
