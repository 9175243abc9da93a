using System.Globalization;
using Microsoft.Data.Sqlite;

namespace Relay.Server.Schedules;

/// <summary>A stored schedule: what it sends, to whom, when, and where it is in its runs.</summary>
internal sealed class Schedule
{
    public required string Id { get; init; }

    /// <summary>The operator's label; null when none was given.</summary>
    public string? Name { get; init; }

    /// <summary>The one device it sends to; null when it sends to a tag.</summary>
    public string? Device { get; init; }

    /// <summary>The tag whose devices (at the time of each run) it sends to; null when it sends to a device.</summary>
    public string? Tag { get; init; }

    public required string CommandName { get; init; }

    public required byte[] Payload { get; init; }

    public bool Binary { get; init; }

    public int TtlSeconds { get; init; }

    public byte QoS { get; init; }

    /// <summary>The id of the API token that created it: its commands count against that token's quota.</summary>
    public string? Token { get; init; }

    /// <summary>Five-field cron expression; null for an "every" schedule.</summary>
    public string? Cron { get; init; }

    /// <summary>IANA time zone of <see cref="Cron"/>.</summary>
    public string? TimeZone { get; init; }

    /// <summary>Seconds between runs of an "every" schedule; null for cron.</summary>
    public long? EverySeconds { get; init; }

    /// <summary>When an "every" schedule's occurrences are counted from (its creation).</summary>
    public DateTimeOffset Anchor { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public bool Paused { get; set; }

    /// <summary>When it runs next; null when its cron expression has no occurrence left.</summary>
    public DateTimeOffset? NextDue { get; set; }

    /// <summary>
    /// The due time of a run that was decided (stored) but whose commands may not be stored yet: finished
    /// (idempotently) by the runner, also after a crash.
    /// </summary>
    public DateTimeOffset? PendingDue { get; set; }

    /// <summary>The due time of its last run that finished (stored commands or failed).</summary>
    public DateTimeOffset? LastRun { get; set; }

    /// <summary>What its last run did, for an operator: "sent N", or why it failed.</summary>
    public string? LastOutcome { get; set; }

    public long Runs { get; set; }

    public long Skipped { get; set; }

    public long Failed { get; set; }

    /// <summary>The timing its fields describe; null if they no longer parse (a time zone removed from the system).</summary>
    public ScheduleTiming? Timing()
    {
        if (EverySeconds is { } seconds)
        {
            return ScheduleTiming.Every(TimeSpan.FromSeconds(seconds), Anchor);
        }

        return ScheduleTiming.TryCron(Cron, TimeZone, out var timing, out _) ? timing : null;
    }

    /// <summary>
    /// The idempotency key of its run due at <paramref name="due"/>: a run retried after a crash finds the
    /// commands it stored before and stores none twice.
    /// </summary>
    public string RunKey(DateTimeOffset due) => "schedule:" + Id + ":" + due.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// <c>schedules.db</c> under the data directory (0600, WAL, synchronous=NORMAL: a commit survives SIGKILL).
/// Writes are few (a schedule created, paused or deleted; two small updates per run), so one connection
/// under a lock serves them all; each write is its own transaction. A run is recorded in two steps around
/// the storing of its commands (<see cref="TryBeginRun"/>, <see cref="FinishRun"/>): the first makes the
/// decision durable, and the commands carry the run's idempotency key, so a crash between the steps neither
/// loses the run nor doubles it.
/// </summary>
internal sealed class ScheduleStore : IDisposable
{
    public const string FileName = "schedules.db";

    private const int SchemaVersion = 1;

    private static readonly string[] Schema =
    [
        """
        CREATE TABLE schedules(
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            name TEXT NULL,
            device TEXT NULL,
            tag TEXT NULL,
            command_name TEXT NOT NULL,
            payload BLOB NOT NULL,
            binary INTEGER NOT NULL,
            ttl_seconds INTEGER NOT NULL,
            qos INTEGER NOT NULL,
            token TEXT NULL,
            cron TEXT NULL,
            time_zone TEXT NULL,
            every_seconds INTEGER NULL,
            anchor INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            paused INTEGER NOT NULL,
            next_due INTEGER NULL,
            pending_due INTEGER NULL,
            last_run INTEGER NULL,
            last_outcome TEXT NULL,
            runs INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            failed INTEGER NOT NULL)
        """,
        "CREATE INDEX schedules_due ON schedules(next_due) WHERE paused = 0 AND next_due IS NOT NULL",
        "CREATE INDEX schedules_pending ON schedules(pending_due) WHERE pending_due IS NOT NULL",
        "CREATE INDEX schedules_device ON schedules(device) WHERE device IS NOT NULL",
        "CREATE INDEX schedules_tag ON schedules(tag) WHERE tag IS NOT NULL",
    ];

    private const string Columns = "id, name, device, tag, command_name, payload, binary, ttl_seconds, qos, token, cron, time_zone, every_seconds, "
        + "anchor, created_at, paused, next_due, pending_due, last_run, last_outcome, runs, skipped, failed";

    private readonly Lock _gate = new();
    private readonly SqliteConnection _connection;

    private ScheduleStore(SqliteConnection connection) => _connection = connection;

    public static ScheduleStore Open(string dataDirectory)
    {
        Hosting.PrivateFiles.CreateDirectory(dataDirectory);
        var path = Path.GetFullPath(Path.Combine(dataDirectory, FileName));
        Hosting.PrivateFiles.PrepareDatabase(path);
        var builder = new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadWriteCreate, Pooling = false };
        var connection = new SqliteConnection(builder.ToString());
        try
        {
            connection.Open();
            Execute(connection, null, "PRAGMA journal_mode=WAL");
            Execute(connection, null, "PRAGMA synchronous=NORMAL");
            Execute(connection, null, "PRAGMA busy_timeout=5000");
            using var read = connection.CreateCommand();
            read.CommandText = "PRAGMA user_version";
            var version = Convert.ToInt32(read.ExecuteScalar(), CultureInfo.InvariantCulture);
            if (version > SchemaVersion)
            {
                throw new InvalidOperationException(
                    $"'{path}' has schema version {version}; this build understands version {SchemaVersion}. Use a matching build or move the file away.");
            }

            if (version < SchemaVersion)
            {
                using var transaction = connection.BeginTransaction();
                foreach (var statement in Schema)
                {
                    Execute(connection, transaction, statement);
                }

                Execute(connection, transaction, $"PRAGMA user_version={SchemaVersion}");
                transaction.Commit();
            }
        }
        catch (SqliteException e)
        {
            connection.Dispose();
            throw new Hosting.RelayConfigurationException(
                $"Relay:DataDirectory: '{path}' is not a usable SQLite database ({e.Message}); restore it from a backup or move it away to start empty");
        }
        catch
        {
            connection.Dispose();
            throw;
        }

        return new ScheduleStore(connection);
    }

    /// <summary>
    /// Stores <paramref name="schedule"/> unless that would pass <paramref name="maxTotal"/> schedules, or
    /// <paramref name="maxPerTarget"/> for its device or tag: the counts and the insert are one step.
    /// </summary>
    public ScheduleLimit? TryAdd(Schedule schedule, int maxTotal, int maxPerTarget)
    {
        lock (_gate)
        {
            using var transaction = _connection.BeginTransaction();
            if (Count(transaction, "SELECT count(*) FROM schedules", null) >= maxTotal)
            {
                return ScheduleLimit.Schedules;
            }

            var perTarget = schedule.Device is { } device
                ? Count(transaction, "SELECT count(*) FROM schedules WHERE device = $v", device)
                : Count(transaction, "SELECT count(*) FROM schedules WHERE tag = $v", schedule.Tag);
            if (perTarget >= maxPerTarget)
            {
                return ScheduleLimit.PerTarget;
            }

            using var insert = _connection.CreateCommand();
            insert.Transaction = transaction;
            insert.CommandText = $"INSERT INTO schedules({Columns}) VALUES($id, $name, $device, $tag, $cname, $payload, $binary, $ttl, $qos, $token, "
                + "$cron, $zone, $every, $anchor, $created, $paused, $next, NULL, NULL, NULL, 0, 0, 0)";
            var p = insert.Parameters;
            p.AddWithValue("$id", schedule.Id);
            p.AddWithValue("$name", (object?)schedule.Name ?? DBNull.Value);
            p.AddWithValue("$device", (object?)schedule.Device ?? DBNull.Value);
            p.AddWithValue("$tag", (object?)schedule.Tag ?? DBNull.Value);
            p.AddWithValue("$cname", schedule.CommandName);
            p.AddWithValue("$payload", schedule.Payload);
            p.AddWithValue("$binary", schedule.Binary ? 1 : 0);
            p.AddWithValue("$ttl", schedule.TtlSeconds);
            p.AddWithValue("$qos", (int)schedule.QoS);
            p.AddWithValue("$token", (object?)schedule.Token ?? DBNull.Value);
            p.AddWithValue("$cron", (object?)schedule.Cron ?? DBNull.Value);
            p.AddWithValue("$zone", (object?)schedule.TimeZone ?? DBNull.Value);
            p.AddWithValue("$every", (object?)schedule.EverySeconds ?? DBNull.Value);
            p.AddWithValue("$anchor", schedule.Anchor.ToUnixTimeMilliseconds());
            p.AddWithValue("$created", schedule.CreatedAt.ToUnixTimeMilliseconds());
            p.AddWithValue("$paused", schedule.Paused ? 1 : 0);
            p.AddWithValue("$next", Ms(schedule.NextDue));
            insert.ExecuteNonQuery();
            transaction.Commit();
            return null;
        }
    }

    public Schedule? Find(string id)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = $"SELECT {Columns} FROM schedules WHERE id = $id";
            command.Parameters.AddWithValue("$id", id);
            return Read(command).FirstOrDefault();
        }
    }

    /// <summary>Schedules in creation order, a page after the one with id <paramref name="after"/>, optionally only a device's or a tag's.</summary>
    public List<Schedule> List(string? device, string? tag, string? after, int limit)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = $"""
                SELECT {Columns} FROM schedules
                WHERE ($device IS NULL OR device = $device) AND ($tag IS NULL OR tag = $tag)
                  AND seq > coalesce((SELECT seq FROM schedules WHERE id = $after), 0)
                ORDER BY seq LIMIT $limit
                """;
            command.Parameters.AddWithValue("$device", (object?)device ?? DBNull.Value);
            command.Parameters.AddWithValue("$tag", (object?)tag ?? DBNull.Value);
            command.Parameters.AddWithValue("$after", (object?)after ?? DBNull.Value);
            command.Parameters.AddWithValue("$limit", limit);
            return Read(command);
        }
    }

    /// <summary>Schedules not paused that are due at or before <paramref name="now"/>, earliest first, at most <paramref name="limit"/>.</summary>
    public List<Schedule> Due(DateTimeOffset now, int limit)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = $"SELECT {Columns} FROM schedules "
                + "WHERE paused = 0 AND next_due IS NOT NULL AND next_due <= $now AND pending_due IS NULL ORDER BY next_due LIMIT $limit";
            command.Parameters.AddWithValue("$now", now.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$limit", limit);
            return Read(command);
        }
    }

    /// <summary>Schedules with a run decided but not finished, at most <paramref name="limit"/>.</summary>
    public List<Schedule> Pending(int limit)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = $"SELECT {Columns} FROM schedules WHERE pending_due IS NOT NULL ORDER BY pending_due LIMIT $limit";
            command.Parameters.AddWithValue("$limit", limit);
            return Read(command);
        }
    }

    /// <summary>When the next schedule that is not paused is due; null when none is.</summary>
    public DateTimeOffset? NextDue()
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "SELECT min(next_due) FROM schedules WHERE paused = 0 AND next_due IS NOT NULL";
            return command.ExecuteScalar() is long ms ? DateTimeOffset.FromUnixTimeMilliseconds(ms) : null;
        }
    }

    /// <summary>
    /// Records a catch-up decision for the schedule that was due at <paramref name="due"/>: next due at
    /// <paramref name="next"/>, <paramref name="skipped"/> occurrences skipped, and, when
    /// <paramref name="run"/> is set, that run pending. False (nothing changed) when the schedule is gone,
    /// paused, or no longer due then: the API changed it meanwhile.
    /// </summary>
    public bool TryBeginRun(string id, DateTimeOffset due, DateTimeOffset? run, long skipped, DateTimeOffset? next)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = """
                UPDATE schedules SET next_due = $next, pending_due = $run, skipped = skipped + $skipped
                WHERE id = $id AND paused = 0 AND next_due = $due AND pending_due IS NULL
                """;
            command.Parameters.AddWithValue("$next", Ms(next));
            command.Parameters.AddWithValue("$run", Ms(run));
            command.Parameters.AddWithValue("$skipped", skipped);
            command.Parameters.AddWithValue("$id", id);
            command.Parameters.AddWithValue("$due", due.ToUnixTimeMilliseconds());
            return command.ExecuteNonQuery() == 1;
        }
    }

    /// <summary>
    /// The pending run due at <paramref name="due"/> is over: its commands are stored (<paramref name="failed"/>
    /// false), or it gave up. <paramref name="skipped"/> counts it as skipped instead (too old to finish).
    /// </summary>
    public void FinishRun(string id, DateTimeOffset due, string outcome, bool failed, bool skipped = false)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = """
                UPDATE schedules SET pending_due = NULL, last_run = $due, last_outcome = $outcome,
                    runs = runs + $ran, failed = failed + $failed, skipped = skipped + $skipped
                WHERE id = $id AND pending_due = $due
                """;
            command.Parameters.AddWithValue("$due", due.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$outcome", outcome);
            command.Parameters.AddWithValue("$ran", failed || skipped ? 0 : 1);
            command.Parameters.AddWithValue("$failed", failed ? 1 : 0);
            command.Parameters.AddWithValue("$skipped", skipped ? 1 : 0);
            command.Parameters.AddWithValue("$id", id);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>Pauses (next due kept for display, not run) or resumes (due next at <paramref name="next"/>); false when unknown.</summary>
    public bool SetPaused(string id, bool paused, DateTimeOffset? next)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = paused
                ? "UPDATE schedules SET paused = 1 WHERE id = $id"
                : "UPDATE schedules SET paused = 0, next_due = $next WHERE id = $id";
            command.Parameters.AddWithValue("$id", id);
            command.Parameters.AddWithValue("$next", Ms(next));
            return command.ExecuteNonQuery() == 1;
        }
    }

    public bool Delete(string id)
    {
        lock (_gate)
        {
            using var command = _connection.CreateCommand();
            command.CommandText = "DELETE FROM schedules WHERE id = $id";
            command.Parameters.AddWithValue("$id", id);
            return command.ExecuteNonQuery() == 1;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _connection.Dispose();
        }
    }

    private long Count(SqliteTransaction transaction, string sql, string? value)
    {
        using var command = _connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.Parameters.AddWithValue("$v", (object?)value ?? DBNull.Value);
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    private static object Ms(DateTimeOffset? at) => (object?)at?.ToUnixTimeMilliseconds() ?? DBNull.Value;

    private static DateTimeOffset? At(SqliteDataReader reader, int i) =>
        reader.IsDBNull(i) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(i));

    private static string? Text(SqliteDataReader reader, int i) => reader.IsDBNull(i) ? null : reader.GetString(i);

    private static List<Schedule> Read(SqliteCommand command)
    {
        var list = new List<Schedule>();
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            list.Add(new Schedule
            {
                Id = reader.GetString(0),
                Name = Text(reader, 1),
                Device = Text(reader, 2),
                Tag = Text(reader, 3),
                CommandName = reader.GetString(4),
                Payload = (byte[])reader.GetValue(5),
                Binary = reader.GetInt64(6) != 0,
                TtlSeconds = reader.GetInt32(7),
                QoS = (byte)reader.GetInt64(8),
                Token = Text(reader, 9),
                Cron = Text(reader, 10),
                TimeZone = Text(reader, 11),
                EverySeconds = reader.IsDBNull(12) ? null : reader.GetInt64(12),
                Anchor = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(13)),
                CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(14)),
                Paused = reader.GetInt64(15) != 0,
                NextDue = At(reader, 16),
                PendingDue = At(reader, 17),
                LastRun = At(reader, 18),
                LastOutcome = Text(reader, 19),
                Runs = reader.GetInt64(20),
                Skipped = reader.GetInt64(21),
                Failed = reader.GetInt64(22),
            });
        }

        return list;
    }

    private static void Execute(SqliteConnection connection, SqliteTransaction? transaction, string sql)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
