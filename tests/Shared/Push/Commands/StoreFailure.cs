using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>
/// Makes a commands.db refuse every step to a final state, with a real SQLite error inside the store's
/// own transaction, as a full disk would (the statement fails, the savepoint rolls back, the caller gets the
/// exception). Undone when disposed.
/// </summary>
internal static class StoreFailure
{
    public static async Task<IAsyncDisposable> FinalTransitionsAsync(string dataDirectory)
    {
        var connection = new Microsoft.Data.Sqlite.SqliteConnection(new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder { DataSource = Path.Combine(dataDirectory, CommandStore.FileName), Pooling = false }.ToString());
        await connection.OpenAsync();
        await ExecuteAsync(connection, "PRAGMA busy_timeout=5000");
        await ExecuteAsync(connection, "CREATE TRIGGER test_disk_full BEFORE UPDATE OF state ON commands WHEN NEW.state >= 2 BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END");
        return new Undo(connection);
    }

    private static async Task ExecuteAsync(Microsoft.Data.Sqlite.SqliteConnection connection, string sql)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>Every insert of a command fails.</summary>
    public static async Task<IAsyncDisposable> InsertsAsync(string dataDirectory)
    {
        var connection = new Microsoft.Data.Sqlite.SqliteConnection(new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder { DataSource = Path.Combine(dataDirectory, CommandStore.FileName), Pooling = false }.ToString());
        await connection.OpenAsync();
        await ExecuteAsync(connection, "PRAGMA busy_timeout=5000");
        await ExecuteAsync(connection, "CREATE TRIGGER test_disk_full BEFORE INSERT ON commands BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END");
        return new Undo(connection);
    }

    private sealed class Undo(Microsoft.Data.Sqlite.SqliteConnection connection) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await ExecuteAsync(connection, "DROP TRIGGER test_disk_full");
            await connection.DisposeAsync();
        }
    }
}
