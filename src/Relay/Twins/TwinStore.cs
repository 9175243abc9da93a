using System.Globalization;
using Microsoft.Data.Sqlite;
using Relay.Server.Hosting;

namespace Relay.Server.Twins;

/// <summary>One device's documents as stored: compact JSON text, versions (0 before the first update) and when each last changed.</summary>
internal sealed record TwinRecord(
    string Device,
    string Desired,
    long DesiredVersion,
    DateTimeOffset? DesiredAt,
    string Reported,
    long ReportedVersion,
    DateTimeOffset? ReportedAt)
{
    public static TwinRecord Empty(string device) => new(device, "{}", 0, null, "{}", 0, null);
}

/// <summary>
/// <c>twins.db</c> under the data directory: one row per device with both documents. Its own file so the state
/// plane's schema evolves apart from the broker's and the commands'. WAL with synchronous=NORMAL, as the other
/// stores: a commit survives kill -9 (only an OS crash may lose the last ones). Writes come from one caller at
/// a time (<see cref="TwinService"/>'s gate), on the writer connection; reads open their own.
/// </summary>
internal sealed class TwinStore : IDisposable
{
    public const string FileName = "twins.db";

    private const int SchemaVersion = 1;

    private const string Schema = """
        CREATE TABLE twins(
            device TEXT PRIMARY KEY,
            desired TEXT NOT NULL,
            desired_version INTEGER NOT NULL,
            desired_at INTEGER NULL,
            reported TEXT NOT NULL,
            reported_version INTEGER NOT NULL,
            reported_at INTEGER NULL) WITHOUT ROWID
        """;

    private readonly SqliteConnection _writer;
    private readonly string _readConnectionString;

    private TwinStore(string path, SqliteConnection writer)
    {
        _writer = writer;
        _readConnectionString = new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = true }.ToString();
    }

    public static TwinStore Open(string dataDirectory)
    {
        PrivateFiles.CreateDirectory(dataDirectory);
        var path = Path.GetFullPath(Path.Combine(dataDirectory, FileName));
        PrivateFiles.PrepareDatabase(path);
        var connectionString = new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadWriteCreate, Pooling = false }.ToString();
        var connection = new SqliteConnection(connectionString);
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
                throw new RelayConfigurationException(
                    $"Relay:DataDirectory: '{path}' has schema version {version}; this build understands version {SchemaVersion}. "
                    + "Use a matching build or move the file away.");
            }

            if (version == 0)
            {
                using var transaction = connection.BeginTransaction();
                Execute(connection, transaction, Schema);
                Execute(connection, transaction, $"PRAGMA user_version={SchemaVersion}");
                transaction.Commit();
            }
        }
        catch (SqliteException e)
        {
            connection.Dispose();
            throw new RelayConfigurationException(
                $"Relay:DataDirectory: '{path}' is not a usable SQLite database ({e.Message}); restore it from a backup or move it away to start empty");
        }
        catch
        {
            connection.Dispose();
            throw;
        }

        return new TwinStore(path, connection);
    }

    /// <summary>The device's row read on the writer connection (the caller holds the write gate), or null.</summary>
    public TwinRecord? LoadForUpdate(string device) => Load(_writer, device);

    /// <summary>The device's row, read on a connection of its own; null when it has none.</summary>
    public TwinRecord? Load(string device)
    {
        using var connection = new SqliteConnection(_readConnectionString);
        connection.Open();
        return Load(connection, device);
    }

    /// <summary>Writes the row (insert or replace); returns once it is committed.</summary>
    public void Save(TwinRecord record)
    {
        using var command = _writer.CreateCommand();
        command.CommandText = """
            INSERT INTO twins(device, desired, desired_version, desired_at, reported, reported_version, reported_at)
            VALUES($d, $ds, $dv, $da, $rs, $rv, $ra)
            ON CONFLICT(device) DO UPDATE SET desired = $ds, desired_version = $dv, desired_at = $da,
                reported = $rs, reported_version = $rv, reported_at = $ra
            """;
        var p = command.Parameters;
        p.AddWithValue("$d", record.Device);
        p.AddWithValue("$ds", record.Desired);
        p.AddWithValue("$dv", record.DesiredVersion);
        p.AddWithValue("$da", (object?)record.DesiredAt?.ToUnixTimeMilliseconds() ?? DBNull.Value);
        p.AddWithValue("$rs", record.Reported);
        p.AddWithValue("$rv", record.ReportedVersion);
        p.AddWithValue("$ra", (object?)record.ReportedAt?.ToUnixTimeMilliseconds() ?? DBNull.Value);
        command.ExecuteNonQuery();
    }

    /// <summary>Deletes the device's row; false when it had none.</summary>
    public bool Delete(string device)
    {
        using var command = _writer.CreateCommand();
        command.CommandText = "DELETE FROM twins WHERE device = $d";
        command.Parameters.AddWithValue("$d", device);
        return command.ExecuteNonQuery() == 1;
    }

    public void Dispose() => _writer.Dispose();

    private static TwinRecord? Load(SqliteConnection connection, string device)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT desired, desired_version, desired_at, reported, reported_version, reported_at FROM twins WHERE device = $d";
        command.Parameters.AddWithValue("$d", device);
        using var reader = command.ExecuteReader();
        if (!reader.Read())
        {
            return null;
        }

        return new TwinRecord(
            device,
            reader.GetString(0),
            reader.GetInt64(1),
            reader.IsDBNull(2) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(2)),
            reader.GetString(3),
            reader.GetInt64(4),
            reader.IsDBNull(5) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(5)));
    }

    private static void Execute(SqliteConnection connection, SqliteTransaction? transaction, string sql)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
