using System.Globalization;
using System.Threading.Channels;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Relay.Server.Mqtt.Storage;

/// <summary>A prepared statement: its SQL and its parameter names, in the order callers set them.</summary>
internal sealed record SqlStatement(string Text, params string[] Parameters);

/// <summary>
/// <c>mqtt.db</c>: one SQLite file under <c>Relay:DataDirectory</c> shared by the session store, the
/// retained store and the device registry. Every write goes through one writer (group commit): callers
/// queue an operation on a bounded channel, one loop drains whatever is pending into a single
/// transaction, commits it, and only then completes each caller. A burst of N writes costs one commit,
/// not N, and the bound turns overload into back-pressure on the callers instead of memory growth.
/// Reads open their own pooled connections: WAL lets them run beside the writer and they see only
/// committed data, which is what callers were told exists.
/// </summary>
internal sealed class MqttDatabase : IAsyncDisposable, IDisposable
{
    /// <summary>File name under the data directory.</summary>
    public const string FileName = "mqtt.db";

    /// <summary><c>PRAGMA user_version</c> this build creates and understands.</summary>
    public const int SchemaVersion = 4;

    /// <summary>Default bound of queued write operations.</summary>
    public const int DefaultQueueCapacity = 4096;

    // A batch is one transaction: large enough to amortise the commit under a storm, small enough
    // that the first caller in it is not held back for long.
    private const int MaxBatch = 512;
    private const int BusyTimeoutMilliseconds = 5000;
    private const int MaxIdleReaders = 4;

    private static readonly string[] Schema =
    [
        """
        CREATE TABLE sessions(
            client_id TEXT NOT NULL PRIMARY KEY,
            expiry_seconds INTEGER NOT NULL,
            disconnected_at INTEGER NULL,
            owner TEXT NULL) WITHOUT ROWID
        """,
        """
        CREATE TABLE subscriptions(
            client_id TEXT NOT NULL,
            filter TEXT NOT NULL,
            qos INTEGER NOT NULL,
            no_local INTEGER NOT NULL,
            retain_as_published INTEGER NOT NULL,
            retain_handling INTEGER NOT NULL,
            subscription_id INTEGER NOT NULL,
            PRIMARY KEY(client_id, filter)) WITHOUT ROWID
        """,
        // AUTOINCREMENT: a sequence is never reused, even after the newest message is deleted, so an
        // engine holding an old sequence can never confuse it with a new message.
        """
        CREATE TABLE messages(
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            client_id TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            retain INTEGER NOT NULL,
            expires_at INTEGER NULL,
            properties BLOB NULL,
            packet_id INTEGER NOT NULL DEFAULT 0,
            released INTEGER NOT NULL DEFAULT 0)
        """,
        "CREATE INDEX messages_by_client ON messages(client_id, seq)",
        """
        CREATE TABLE retained(
            topic TEXT NOT NULL PRIMARY KEY,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            expires_at INTEGER NULL,
            properties BLOB NULL,
            owner TEXT NULL) WITHOUT ROWID
        """,
        """
        CREATE TABLE devices(
            id TEXT NOT NULL PRIMARY KEY,
            secret_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            grants TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            tags TEXT NOT NULL DEFAULT '[]') WITHOUT ROWID
        """,
    ];

    // Upgrades, indexed by the version they start from: Upgrades[1] takes a version 1 file to 2.
    // Each runs in one transaction with the new user_version, so a crash leaves the old version intact.
    private static readonly string[][] Upgrades =
    [
        [],
        // Version 2 (push plane): device tags, a JSON array of strings, for filters and broadcast.
        ["ALTER TABLE devices ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'"],
        // Version 3 (hostile internet): the principal that owns a session, so a client id cannot be taken
        // over by another identity. NULL for sessions from before: the next principal to resume one owns it.
        ["ALTER TABLE sessions ADD COLUMN owner TEXT NULL"],
        // Version 4 (hostile internet): the client id holding each retained message, for the per-client
        // retained quotas across restarts (review H4). NULL for rows from before: they count globally only.
        ["ALTER TABLE retained ADD COLUMN owner TEXT NULL"],
    ];

    private readonly SqliteConnection _writer;
    private readonly Channel<WriteOperation> _queue;
    private readonly Dictionary<SqlStatement, SqliteCommand> _commands = new(ReferenceEqualityComparer.Instance);
    private readonly string _readConnectionString;
    private readonly System.Collections.Concurrent.ConcurrentQueue<SqliteConnection> _idleReaders = new();
    private readonly ILogger _logger;
    private readonly Task _loop;
    private SqliteTransaction? _transaction;
    private int _disposed;
    private long _commits;

    private MqttDatabase(string path, SqliteConnection writer, int queueCapacity, ILogger logger)
    {
        FilePath = path;
        _writer = writer;
        _logger = logger;
        _readConnectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadOnly,
            // Our own small pool (RentReader) instead of Microsoft.Data.Sqlite's process-wide one,
            // so that disposing the store really closes every handle on the file.
            Pooling = false,
        }.ToString();
        _queue = Channel.CreateBounded<WriteOperation>(new BoundedChannelOptions(queueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _loop = Task.Run(RunWriterAsync);
    }

    /// <summary>Full path of the database file.</summary>
    public string FilePath { get; }

    /// <summary>Transactions committed by the writer (one per batch); tests see group commit in it.</summary>
    public long Commits => Volatile.Read(ref _commits);

    /// <summary>
    /// Opens (creating on first use) <c>mqtt.db</c> in <paramref name="dataDirectory"/>. Throws
    /// <see cref="InvalidOperationException"/> when the file has a schema newer than this build.
    /// </summary>
    public static MqttDatabase Open(string dataDirectory, ILogger? logger = null, int queueCapacity = DefaultQueueCapacity)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCapacity, 1);
        Hosting.PrivateFiles.CreateDirectory(dataDirectory);
        var path = Path.GetFullPath(Path.Combine(dataDirectory, FileName));
        Hosting.PrivateFiles.PrepareDatabase(path);
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            // The writer lives as long as the store; pooling would only keep the file open after Dispose.
            Pooling = false,
        }.ToString());
        try
        {
            connection.Open();
            // WAL: readers never block the writer. synchronous=NORMAL in WAL mode: a commit is appended
            // to the WAL with write(2) but not fsync'd; the WAL is synced at checkpoints. That survives
            // a process crash or SIGKILL (the kernel holds the written pages), which is the durability
            // we promise; only an OS crash or power loss may lose the last commits. FULL would fsync
            // every commit and cap us at the disk's flush rate.
            Execute(connection, "PRAGMA journal_mode=WAL");
            Execute(connection, "PRAGMA synchronous=NORMAL");
            Execute(connection, string.Create(CultureInfo.InvariantCulture, $"PRAGMA busy_timeout={BusyTimeoutMilliseconds}"));
            Migrate(connection, path);
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

        return new MqttDatabase(path, connection, queueCapacity, logger ?? NullLogger.Instance);
    }

    /// <summary>Opens a read-only connection to committed data; dispose it after use.</summary>
    public SqliteConnection OpenReader()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var connection = new SqliteConnection(_readConnectionString);
        connection.Open();
        return connection;
    }

    /// <summary>
    /// A read-only connection from a small pool, for frequent reads (a lookup per CONNECT): opening a
    /// SQLite connection parses the schema each time. Dispose the lease to return it.
    /// </summary>
    public ReaderLease RentReader() =>
        new(this, _idleReaders.TryDequeue(out var connection) ? connection : OpenReader());

    private void Return(SqliteConnection connection)
    {
        if (Volatile.Read(ref _disposed) == 0 && _idleReaders.Count < MaxIdleReaders)
        {
            _idleReaders.Enqueue(connection);
            // Disposal may have drained the queue between the check and the enqueue.
            if (Volatile.Read(ref _disposed) == 0 || !_idleReaders.TryDequeue(out var late))
            {
                return;
            }

            connection = late;
        }

        connection.Dispose();
    }

    /// <summary>
    /// Queues <paramref name="operation"/> for the writer and completes after the transaction that ran
    /// it committed. <paramref name="cancellationToken"/> only cancels waiting for queue space: once
    /// queued, an operation runs, because abandoning it half-way through a batch is not possible.
    /// The operation runs on the writer; it must only use <see cref="WriteContext"/> and not block.
    /// </summary>
    public async ValueTask<T> WriteAsync<T>(Func<WriteContext, T> operation, CancellationToken cancellationToken)
    {
        var op = new WriteOperation<T>(operation);
        try
        {
            await _queue.Writer.WriteAsync(op, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(MqttDatabase));
        }

        return await op.Completion.Task.ConfigureAwait(false);
    }

    /// <summary>For containers disposed synchronously; the writer's loop never needs the calling thread.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>Stops accepting writes, lets the writer commit everything queued, then closes the file.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
        foreach (var command in _commands.Values)
        {
            command.Dispose();
        }

        _commands.Clear();
        while (_idleReaders.TryDequeue(out var reader))
        {
            reader.Dispose();
        }

        _writer.Dispose();
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static void Migrate(SqliteConnection connection, string path)
    {
        using var read = connection.CreateCommand();
        read.CommandText = "PRAGMA user_version";
        var version = Convert.ToInt32(read.ExecuteScalar(), CultureInfo.InvariantCulture);
        if (version == SchemaVersion)
        {
            return;
        }

        if (version < 0 || version > SchemaVersion)
        {
            throw new InvalidOperationException($"'{path}' has schema version {version}; this build understands version {SchemaVersion}. Use a matching build or move the file away.");
        }

        // Created (or upgraded) in one transaction with the version, so a crash during creation leaves
        // version 0 and an empty file that the next start creates again, and a crash during an upgrade
        // leaves the previous version.
        using var transaction = connection.BeginTransaction();
        var statements = version == 0 ? Schema : Upgrades[version..].SelectMany(static u => u);
        foreach (var statement in statements)
        {
            using var command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = statement;
            command.ExecuteNonQuery();
        }

        using (var setVersion = connection.CreateCommand())
        {
            setVersion.Transaction = transaction;
            setVersion.CommandText = string.Create(CultureInfo.InvariantCulture, $"PRAGMA user_version={SchemaVersion}");
            setVersion.ExecuteNonQuery();
        }

        transaction.Commit();
    }

    private async Task RunWriterAsync()
    {
        var batch = new List<WriteOperation>(MaxBatch);
        var context = new WriteContext(this);
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (batch.Count < MaxBatch && reader.TryRead(out var op))
            {
                batch.Add(op);
            }

            RunBatch(batch, context);
            batch.Clear();
        }
    }

    // Catches everything: an exception escaping here would end the loop and leave every later caller
    // waiting forever; instead the failing operation's caller gets it.
    private void RunBatch(List<WriteOperation> batch, WriteContext context)
    {
        try
        {
            using (_transaction = _writer.BeginTransaction())
            {
                foreach (var op in batch)
                {
                    op.Execute(context);
                }

                _transaction.Commit();
            }

            _transaction = null;
            Interlocked.Increment(ref _commits);
            foreach (var op in batch)
            {
                op.Complete();
            }

            return;
        }
        catch (Exception e)
        {
            // One bad operation must not fail its batch-mates: the batch rolled back (Dispose without
            // Commit), so run each alone and fail only the one that throws.
            _transaction = null;
            if (batch.Count == 1)
            {
                LogFailure(e);
                batch[0].Fail(e);
                return;
            }
        }

        foreach (var op in batch)
        {
            try
            {
                using (_transaction = _writer.BeginTransaction())
                {
                    op.Execute(context);
                    _transaction.Commit();
                }

                _transaction = null;
                Interlocked.Increment(ref _commits);
                op.Complete();
            }
            catch (Exception e)
            {
                _transaction = null;
                LogFailure(e);
                op.Fail(e);
            }
        }
    }

    private void LogFailure(Exception e) => _logger.LogError(e, "mqtt.db: a write failed and was rolled back");

    private SqliteCommand Command(SqlStatement statement)
    {
        if (!_commands.TryGetValue(statement, out var command))
        {
            command = _writer.CreateCommand();
            command.CommandText = statement.Text;
            foreach (var name in statement.Parameters)
            {
                command.Parameters.Add(new SqliteParameter { ParameterName = name });
            }

            _commands.Add(statement, command);
        }

        command.Transaction = _transaction;
        for (var i = 0; i < command.Parameters.Count; i++)
        {
            command.Parameters[i].Value = DBNull.Value;
        }

        return command;
    }

    /// <summary>A pooled read connection; disposing returns it.</summary>
    internal readonly struct ReaderLease : IDisposable
    {
        private readonly MqttDatabase _database;

        public ReaderLease(MqttDatabase database, SqliteConnection connection)
        {
            _database = database;
            Connection = connection;
        }

        public SqliteConnection Connection { get; }

        public void Dispose() => _database?.Return(Connection);
    }

    /// <summary>What an operation may do on the writer: run cached prepared statements in the batch's transaction.</summary>
    internal readonly struct WriteContext
    {
        private readonly MqttDatabase _database;

        public WriteContext(MqttDatabase database) => _database = database;

        /// <summary>The statement's cached command, bound to the current transaction, parameters reset to NULL.</summary>
        public SqliteCommand Command(SqlStatement statement) => _database.Command(statement);
    }

    private abstract class WriteOperation
    {
        public abstract void Execute(WriteContext context);

        public abstract void Complete();

        public abstract void Fail(Exception exception);
    }

    private sealed class WriteOperation<T>(Func<WriteContext, T> operation) : WriteOperation
    {
        private T _result = default!;

        // Continuations run off the writer so a slow caller never stalls the next batch.
        public TaskCompletionSource<T> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Execute(WriteContext context) => _result = operation(context);

        public override void Complete() => Completion.TrySetResult(_result);

        public override void Fail(Exception exception) => Completion.TrySetException(exception);
    }
}

/// <summary>Conversions between the stores' values and SQLite columns.</summary>
internal static class SqliteValues
{
    public static object From(DateTimeOffset? value) => value is { } v ? v.ToUnixTimeMilliseconds() : DBNull.Value;

    public static DateTimeOffset? ReadTime(SqliteDataReader reader, int ordinal) =>
        reader.IsDBNull(ordinal) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(ordinal));

    /// <summary>The payload's own array when it is one whole array (the usual case), else a copy.</summary>
    public static byte[] Blob(ReadOnlyMemory<byte> value) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(value, out var segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : value.ToArray();

    public static byte[] ReadBlob(SqliteDataReader reader, int ordinal) =>
        reader.IsDBNull(ordinal) ? [] : (byte[])reader.GetValue(ordinal);
}
