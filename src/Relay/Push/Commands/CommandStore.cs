using System.Globalization;
using System.Threading.Channels;
using Microsoft.Data.Sqlite;

namespace Relay.Server.Push.Commands;

/// <summary>
/// A command as stored and as kept in memory while it is not final. Once handed to the <see cref="CommandLoop"/>,
/// only the loop changes <see cref="State"/>. A command reloaded at start has no <see cref="Payload"/> in
/// memory (review H4): the loop reads it from the store when the command is about to be sent.
/// </summary>
internal sealed class CommandEntry
{
    public long Seq { get; set; }

    public required string Id { get; init; }

    public required string Device { get; init; }

    public required string Name { get; init; }

    /// <summary>True: <see cref="Payload"/> is opaque bytes (sent as payloadBase64); false: UTF-8 JSON text.</summary>
    public bool Binary { get; init; }

    /// <summary>The payload; null for a command reloaded at start, whose payload stays in the store until it is sent.</summary>
    public byte[]? Payload { get; init; }

    /// <summary>The payload's size in bytes, known also when <see cref="Payload"/> is not in memory.</summary>
    public int PayloadLength { get; init; }

    /// <summary>The id of the API token that sent the command (its queued bytes count against that token); null for commands stored before tokens were recorded.</summary>
    public string? Token { get; init; }

    public byte QoS { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset ExpiresAt { get; init; }

    /// <summary>Not sent to the device before this time (still queued, cancelable); null: at once.</summary>
    public DateTimeOffset? NotBefore { get; init; }

    /// <summary>
    /// The sender's key for this command: a second enqueue for the same device and key returns the stored
    /// command instead of a new one (a scheduled run retried after a crash); null: none.
    /// </summary>
    public string? IdempotencyKey { get; init; }

    public CommandState State { get; set; }

    public DateTimeOffset UpdatedAt { get; set; }

    /// <summary>The device's result payload (JSON text) once Succeeded/Failed.</summary>
    public string? ResultJson { get; set; }
}

/// <summary>A stored transition.</summary>
internal readonly record struct StoredTransition(CommandState State, DateTimeOffset At, string? ResultJson);

/// <summary>
/// <c>commands.db</c> under the data directory: commands and their transitions. Its own file (not mqtt.db)
/// so the push plane's schema evolves without touching the broker's. Same patterns as MqttDatabase: WAL,
/// synchronous=NORMAL (a commit survives SIGKILL; only an OS crash may lose the last ones), one writer that
/// drains every queued operation into one transaction (group commit) and completes callers after the
/// commit, a bounded queue (back-pressure, not memory growth), readers on their own connections.
/// </summary>
/// <remarks>
/// Finished commands are deleted after <c>Relay:Push:RetainFinishedDays</c> (<see cref="PruneAsync"/>,
/// review M4). New files use <c>auto_vacuum=INCREMENTAL</c>, so the pages a prune frees go back to the file
/// system (<see cref="VacuumAsync"/>). SQLite can only choose that mode before the first table exists: a
/// file created by an older build keeps <c>auto_vacuum=NONE</c>, reuses freed pages for new rows (it stops
/// growing) but does not shrink; converting it takes <c>PRAGMA auto_vacuum=INCREMENTAL; VACUUM;</c> with the
/// server stopped (docs/push.md).
/// </remarks>
internal sealed class CommandStore : IAsyncDisposable
{
    public const string FileName = "commands.db";

    // v2: commands.token (the sender's API token id, for the per-token quota) and the commands_final
    // index (the prune's scan). v3: commands.not_before and commands.idempotency_key (unique per device).
    // Older files are migrated at open; an older build refuses a newer file.
    private const int SchemaVersion = 3;
    private const int MaxBatch = 512;

    private static readonly string[] Schema =
    [
        """
        CREATE TABLE commands(
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            device TEXT NOT NULL,
            name TEXT NOT NULL,
            binary INTEGER NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            state INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            result TEXT NULL,
            token TEXT NULL,
            not_before INTEGER NULL,
            idempotency_key TEXT NULL)
        """,
        "CREATE INDEX commands_by_device ON commands(device, seq)",
        // Only non-final commands are reloaded at start; the partial index keeps that read small.
        "CREATE INDEX commands_active ON commands(seq) WHERE state < 2",
        FinalIndex,
        IdempotencyIndex,
        """
        CREATE TABLE transitions(
            command_seq INTEGER NOT NULL,
            state INTEGER NOT NULL,
            at INTEGER NOT NULL,
            result TEXT NULL)
        """,
        "CREATE INDEX transitions_by_command ON transitions(command_seq)",
    ];

    // The prune finds final commands by when they became final.
    private const string FinalIndex = "CREATE INDEX commands_final ON commands(updated_at) WHERE state >= 2";

    // A key names one command per device; the index is also what finds it again.
    private const string IdempotencyIndex = "CREATE UNIQUE INDEX commands_idempotency ON commands(device, idempotency_key) WHERE idempotency_key IS NOT NULL";

    private static readonly string[] MigrateFromV1 =
    [
        "ALTER TABLE commands ADD COLUMN token TEXT NULL",
        FinalIndex,
    ];

    private static readonly string[] MigrateFromV2 =
    [
        "ALTER TABLE commands ADD COLUMN not_before INTEGER NULL",
        "ALTER TABLE commands ADD COLUMN idempotency_key TEXT NULL",
        IdempotencyIndex,
    ];

    private readonly SqliteConnection _writer;
    private readonly string _readConnectionString;
    private readonly Channel<Operation> _queue = Channel.CreateBounded<Operation>(new BoundedChannelOptions(8192) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly Task _loop;
    private int _disposed;

    private CommandStore(string path, SqliteConnection writer)
    {
        _writer = writer;
        _readConnectionString = new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = true }.ToString();
        _loop = Task.Run(RunWriterAsync);
    }

    public static CommandStore Open(string dataDirectory)
    {
        Hosting.PrivateFiles.CreateDirectory(dataDirectory);
        var path = Path.GetFullPath(Path.Combine(dataDirectory, FileName));
        Hosting.PrivateFiles.PrepareDatabase(path);
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadWriteCreate, Pooling = false }.ToString());
        try
        {
            connection.Open();

            // First: only a file without tables takes it (an existing file keeps its mode; see remarks).
            Execute(connection, null, "PRAGMA auto_vacuum=INCREMENTAL");
            Execute(connection, null, "PRAGMA journal_mode=WAL");
            Execute(connection, null, "PRAGMA synchronous=NORMAL");
            Execute(connection, null, "PRAGMA busy_timeout=5000");
            using (var read = connection.CreateCommand())
            {
                read.CommandText = "PRAGMA user_version";
                var version = Convert.ToInt32(read.ExecuteScalar(), CultureInfo.InvariantCulture);
                if (version > SchemaVersion)
                {
                    throw new InvalidOperationException($"'{path}' has schema version {version}; this build understands version {SchemaVersion}. Use a matching build or move the file away.");
                }

                if (version < SchemaVersion)
                {
                    // One transaction with the version: a crash part way leaves the file as it was.
                    using var transaction = connection.BeginTransaction();
                    string[] steps = version switch
                    {
                        0 => Schema,
                        1 => [.. MigrateFromV1, .. MigrateFromV2],
                        _ => MigrateFromV2,
                    };
                    foreach (var statement in steps)
                    {
                        Execute(connection, transaction, statement);
                    }

                    Execute(connection, transaction, $"PRAGMA user_version={SchemaVersion}");
                    transaction.Commit();
                }
            }
        }
        catch (SqliteException e)
        {
            // Garbage, a truncated copy, a disk error: one line naming the file, not a stack trace (review L5).
            connection.Dispose();
            throw new Hosting.RelayConfigurationException($"Relay:DataDirectory: '{path}' is not a usable SQLite database ({e.Message}); restore it from a backup or move it away to start empty");
        }
        catch
        {
            connection.Dispose();
            throw;
        }

        return new CommandStore(path, connection);
    }

    /// <summary>Inserts commands (state Queued) with their first transition in one transaction; sets each <see cref="CommandEntry.Seq"/>.</summary>
    public Task InsertAsync(IReadOnlyList<CommandEntry> entries, CancellationToken cancellationToken) =>
        WriteAsync(
            (connection, transaction) =>
            {
                using var insert = connection.CreateCommand();
                insert.Transaction = transaction;
                insert.CommandText = "INSERT INTO commands(id, device, name, binary, payload, qos, created_at, expires_at, state, updated_at, token, not_before, idempotency_key) VALUES($i, $d, $n, $b, $p, $q, $c, $e, 0, $c, $t, $nb, $k) RETURNING seq";
                var p = insert.Parameters;
                var (id, device, name, binary, payload, qos, created, expires) = (p.Add("$i", SqliteType.Text), p.Add("$d", SqliteType.Text), p.Add("$n", SqliteType.Text), p.Add("$b", SqliteType.Integer), p.Add("$p", SqliteType.Blob), p.Add("$q", SqliteType.Integer), p.Add("$c", SqliteType.Integer), p.Add("$e", SqliteType.Integer));
                var (token, notBefore, key) = (p.Add("$t", SqliteType.Text), p.Add("$nb", SqliteType.Integer), p.Add("$k", SqliteType.Text));
                using var transition = TransitionCommand(connection, transaction);
                foreach (var entry in entries)
                {
                    id.Value = entry.Id;
                    device.Value = entry.Device;
                    name.Value = entry.Name;
                    binary.Value = entry.Binary ? 1 : 0;
                    payload.Value = entry.Payload ?? throw new ArgumentException($"Command {entry.Id} has no payload to store.", nameof(entries));
                    qos.Value = entry.QoS;
                    created.Value = entry.CreatedAt.ToUnixTimeMilliseconds();
                    expires.Value = entry.ExpiresAt.ToUnixTimeMilliseconds();
                    token.Value = (object?)entry.Token ?? DBNull.Value;
                    notBefore.Value = (object?)entry.NotBefore?.ToUnixTimeMilliseconds() ?? DBNull.Value;
                    key.Value = (object?)entry.IdempotencyKey ?? DBNull.Value;
                    entry.Seq = Convert.ToInt64(insert.ExecuteScalar(), CultureInfo.InvariantCulture);
                    AddTransition(transition, entry.Seq, CommandState.Queued, entry.CreatedAt, null);
                }

                return 0;
            },
            cancellationToken);

    /// <summary>
    /// Applies transitions in one transaction. A transition is recorded only when the stored command is not
    /// final yet (the row is the arbiter), so a duplicate result can never be recorded twice; the returned
    /// flags say which ones were applied.
    /// </summary>
    public Task<bool[]> ApplyAsync(IReadOnlyList<(long Seq, CommandState State, DateTimeOffset At, string? Result)> changes, CancellationToken cancellationToken) =>
        WriteAsync(
            (connection, transaction) =>
            {
                using var update = connection.CreateCommand();
                update.Transaction = transaction;
                update.CommandText = "UPDATE commands SET state = $s, updated_at = $a, result = coalesce($r, result) WHERE seq = $q AND state < 2 AND state <> $s";
                var p = update.Parameters;
                var (s, a, r, q) = (p.Add("$s", SqliteType.Integer), p.Add("$a", SqliteType.Integer), p.Add("$r", SqliteType.Text), p.Add("$q", SqliteType.Integer));
                using var transition = TransitionCommand(connection, transaction);
                var applied = new bool[changes.Count];
                for (var i = 0; i < changes.Count; i++)
                {
                    var change = changes[i];
                    s.Value = (int)change.State;
                    a.Value = change.At.ToUnixTimeMilliseconds();
                    r.Value = (object?)change.Result ?? DBNull.Value;
                    q.Value = change.Seq;
                    if (update.ExecuteNonQuery() == 1)
                    {
                        applied[i] = true;
                        AddTransition(transition, change.Seq, change.State, change.At, change.Result);
                    }
                }

                return applied;
            },
            cancellationToken);

    /// <summary>
    /// Every command not in a final state, oldest first (reloaded at start), without its payload: what a start
    /// holds in memory is then bounded by the commands' count (each token's share bounded by
    /// Relay:Push:MaxQueuedBytesPerToken), not by their payloads; <see cref="LoadPayload"/> reads one when needed.
    /// </summary>
    public List<CommandEntry> LoadActive()
    {
        using var connection = OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = SelectWithoutPayload + " WHERE state < 2 ORDER BY seq";
        return ReadEntries(command);
    }

    /// <summary>The payload of command <paramref name="seq"/>; null when it is no longer stored.</summary>
    public byte[]? LoadPayload(long seq)
    {
        using var connection = OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT payload FROM commands WHERE seq = $q";
        command.Parameters.AddWithValue("$q", seq);
        return command.ExecuteScalar() as byte[];
    }

    /// <summary>
    /// Deletes up to <paramref name="limit"/> commands that became final before <paramref name="cutoff"/>,
    /// with their transitions, in one operation of the writer (so a prune of millions of rows goes in many
    /// small transactions, between which the writer serves everyone else). Returns how many it deleted.
    /// </summary>
    public Task<int> PruneAsync(DateTimeOffset cutoff, int limit, CancellationToken cancellationToken) =>
        WriteAsync(
            (connection, transaction) =>
            {
                var seqs = new List<long>(limit);
                using (var select = connection.CreateCommand())
                {
                    select.Transaction = transaction;
                    select.CommandText = "SELECT seq FROM commands WHERE state >= 2 AND updated_at < $c ORDER BY updated_at LIMIT $l";
                    select.Parameters.AddWithValue("$c", cutoff.ToUnixTimeMilliseconds());
                    select.Parameters.AddWithValue("$l", limit);
                    using var reader = select.ExecuteReader();
                    while (reader.Read())
                    {
                        seqs.Add(reader.GetInt64(0));
                    }
                }

                using var transitions = connection.CreateCommand();
                transitions.Transaction = transaction;
                transitions.CommandText = "DELETE FROM transitions WHERE command_seq = $q";
                var t = transitions.Parameters.Add("$q", SqliteType.Integer);
                using var commands = connection.CreateCommand();
                commands.Transaction = transaction;
                commands.CommandText = "DELETE FROM commands WHERE seq = $q";
                var c = commands.Parameters.Add("$q", SqliteType.Integer);
                foreach (var seq in seqs)
                {
                    t.Value = seq;
                    transitions.ExecuteNonQuery();
                    c.Value = seq;
                    commands.ExecuteNonQuery();
                }

                return seqs.Count;
            },
            cancellationToken);

    /// <summary>
    /// Gives up to <paramref name="pages"/> free pages back to the file system (<c>PRAGMA incremental_vacuum</c>);
    /// returns how many it freed: 0 when none are free, or the file does not use incremental auto-vacuum.
    /// </summary>
    public Task<long> VacuumAsync(int pages, CancellationToken cancellationToken) =>
        WriteAsync(
            (connection, transaction) =>
            {
                using var count = connection.CreateCommand();
                count.Transaction = transaction;
                count.CommandText = "PRAGMA freelist_count";
                var before = Convert.ToInt64(count.ExecuteScalar(), CultureInfo.InvariantCulture);
                if (before == 0)
                {
                    return 0L;
                }

                Execute(connection, transaction, $"PRAGMA incremental_vacuum({pages.ToString(CultureInfo.InvariantCulture)})");
                return before - Convert.ToInt64(count.ExecuteScalar(), CultureInfo.InvariantCulture);
            },
            cancellationToken);

    public (CommandEntry Entry, List<StoredTransition> Transitions)? Find(string id)
    {
        using var connection = OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = Select + " WHERE id = $i";
        command.Parameters.AddWithValue("$i", id);
        var entries = ReadEntries(command);
        if (entries.Count == 0)
        {
            return null;
        }

        using var transitions = connection.CreateCommand();
        transitions.CommandText = "SELECT state, at, result FROM transitions WHERE command_seq = $q ORDER BY rowid";
        transitions.Parameters.AddWithValue("$q", entries[0].Seq);
        var list = new List<StoredTransition>();
        using var reader = transitions.ExecuteReader();
        while (reader.Read())
        {
            list.Add(new((CommandState)reader.GetInt32(0), DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(1)), reader.IsDBNull(2) ? null : reader.GetString(2)));
        }

        return (entries[0], list);
    }

    /// <summary>
    /// The stored commands (without payloads) that carry <paramref name="key"/> for any of
    /// <paramref name="devices"/>: an enqueue with that key has happened for them already.
    /// </summary>
    public List<CommandEntry> FindByKey(string key, IReadOnlyList<string> devices)
    {
        var found = new List<CommandEntry>();
        using var connection = OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = SelectWithoutPayload + " WHERE device = $d AND idempotency_key = $k";
        var device = command.Parameters.Add("$d", SqliteType.Text);
        command.Parameters.AddWithValue("$k", key);
        foreach (var id in devices)
        {
            device.Value = id;
            found.AddRange(ReadEntries(command));
        }

        return found;
    }

    /// <summary>A device's commands, newest first; <paramref name="after"/> is the id of the last one of the previous page.</summary>
    public List<CommandEntry> History(string device, string? after, int limit)
    {
        using var connection = OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = Select + " WHERE device = $d AND seq < coalesce((SELECT seq FROM commands WHERE id = $a AND device = $d), 9223372036854775807) ORDER BY seq DESC LIMIT $l";
        command.Parameters.AddWithValue("$d", device);
        command.Parameters.AddWithValue("$a", (object?)after ?? DBNull.Value);
        command.Parameters.AddWithValue("$l", limit);
        return ReadEntries(command);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // Everything queued is committed before the file closes.
        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
        _writer.Dispose();
        SqliteConnection.ClearPool(new SqliteConnection(_readConnectionString));
    }

    private const string Select = "SELECT seq, id, device, name, binary, payload, qos, created_at, expires_at, state, updated_at, result, length(payload), token, not_before, idempotency_key FROM commands";

    // The same columns, the payload left in the file.
    private const string SelectWithoutPayload = "SELECT seq, id, device, name, binary, NULL, qos, created_at, expires_at, state, updated_at, result, length(payload), token, not_before, idempotency_key FROM commands";

    private static List<CommandEntry> ReadEntries(SqliteCommand command)
    {
        var list = new List<CommandEntry>();
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            list.Add(new CommandEntry
            {
                Seq = reader.GetInt64(0),
                Id = reader.GetString(1),
                Device = reader.GetString(2),
                Name = reader.GetString(3),
                Binary = reader.GetInt64(4) != 0,
                Payload = reader.IsDBNull(5) ? null : (byte[])reader.GetValue(5),
                PayloadLength = reader.GetInt32(12),
                Token = reader.IsDBNull(13) ? null : reader.GetString(13),
                NotBefore = reader.IsDBNull(14) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(14)),
                IdempotencyKey = reader.IsDBNull(15) ? null : reader.GetString(15),
                QoS = (byte)reader.GetInt64(6),
                CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(7)),
                ExpiresAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(8)),
                State = (CommandState)reader.GetInt32(9),
                UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(10)),
                ResultJson = reader.IsDBNull(11) ? null : reader.GetString(11),
            });
        }

        return list;
    }

    private SqliteConnection OpenReader()
    {
        var connection = new SqliteConnection(_readConnectionString);
        connection.Open();
        return connection;
    }

    private static SqliteCommand TransitionCommand(SqliteConnection connection, SqliteTransaction transaction)
    {
        var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = "INSERT INTO transitions(command_seq, state, at, result) VALUES($q, $s, $a, $r)";
        command.Parameters.Add("$q", SqliteType.Integer);
        command.Parameters.Add("$s", SqliteType.Integer);
        command.Parameters.Add("$a", SqliteType.Integer);
        command.Parameters.Add("$r", SqliteType.Text);
        return command;
    }

    private static void AddTransition(SqliteCommand command, long seq, CommandState state, DateTimeOffset at, string? result)
    {
        command.Parameters[0].Value = seq;
        command.Parameters[1].Value = (int)state;
        command.Parameters[2].Value = at.ToUnixTimeMilliseconds();
        command.Parameters[3].Value = (object?)result ?? DBNull.Value;
        command.ExecuteNonQuery();
    }

    private static void Execute(SqliteConnection connection, SqliteTransaction? transaction, string sql)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private async Task<T> WriteAsync<T>(Func<SqliteConnection, SqliteTransaction, T> work, CancellationToken cancellationToken)
    {
        var op = new Operation<T>(work);
        try
        {
            await _queue.Writer.WriteAsync(op, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(CommandStore));
        }

        return await op.Completion.Task.ConfigureAwait(false);
    }

    private async Task RunWriterAsync()
    {
        var batch = new List<Operation>(MaxBatch);
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (batch.Count < MaxBatch && reader.TryRead(out var op))
            {
                batch.Add(op);
            }

            try
            {
                using var transaction = _writer.BeginTransaction();
                foreach (var op in batch)
                {
                    // A savepoint per operation: one failing operation fails alone, not its batch.
                    Execute(_writer, transaction, "SAVEPOINT op");
                    try
                    {
                        op.Run(_writer, transaction);
                        Execute(_writer, transaction, "RELEASE op");
                    }
                    catch (SqliteException e)
                    {
                        Execute(_writer, transaction, "ROLLBACK TO op");
                        Execute(_writer, transaction, "RELEASE op");
                        op.Failure = e;
                    }
                }

                transaction.Commit();
                foreach (var op in batch)
                {
                    op.Complete();
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                foreach (var op in batch)
                {
                    op.Failure ??= e;
                    op.Complete();
                }
            }

            batch.Clear();
        }
    }

    private abstract class Operation
    {
        public Exception? Failure { get; set; }

        public abstract void Run(SqliteConnection connection, SqliteTransaction transaction);

        public abstract void Complete();
    }

    private sealed class Operation<T>(Func<SqliteConnection, SqliteTransaction, T> work) : Operation
    {
        private T? _result;

        public TaskCompletionSource<T> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Run(SqliteConnection connection, SqliteTransaction transaction) => _result = work(connection, transaction);

        public override void Complete()
        {
            if (Failure is { } failure)
            {
                Completion.TrySetException(failure);
            }
            else
            {
                Completion.TrySetResult(_result!);
            }
        }
    }
}
