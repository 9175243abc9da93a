using Npgsql;
using NpgsqlTypes;

namespace Relay.Server.Connectors;

/// <summary>
/// Writes each batch to one PostgreSQL table with one binary <c>COPY ... FROM STDIN</c> (one statement: the
/// whole batch or none of it). The table is created if missing, before the first write and again if it
/// disappears:
/// <code>
/// CREATE TABLE IF NOT EXISTS relay_messages (
///     id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
///     client_id   text        NOT NULL,   -- the publisher's MQTT client id (a device's id)
///     topic       text        NOT NULL,
///     payload     bytea       NOT NULL,
///     qos         smallint    NOT NULL,
///     retain      boolean     NOT NULL,
///     received_at timestamptz NOT NULL);  -- when the broker accepted the PUBLISH
/// CREATE INDEX IF NOT EXISTS relay_messages_client_received_idx ON relay_messages (client_id, received_at);
/// </code>
/// </summary>
internal sealed class PostgresConnectorTarget : IConnectorTarget
{
    private const string UndefinedTable = "42P01";

    private readonly NpgsqlDataSource _source;
    private readonly string _table;
    private readonly string _copy;
    private bool _tableReady;

    public PostgresConnectorTarget(PostgresConnectorOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var connection = new NpgsqlConnectionStringBuilder(options.ConnectionString);
        if (!connection.ContainsKey("Timeout"))
        {
            connection.Timeout = Math.Min(options.TimeoutSeconds, 1024);
        }

        _source = NpgsqlDataSource.Create(connection);

        // Validated as a lower-case identifier (optionally schema-qualified): safe to put in SQL as it is.
        _table = options.Table;
        _copy = $"COPY {_table} (client_id, topic, payload, qos, retain, received_at) FROM STDIN (FORMAT BINARY)";
    }

    /// <summary>The statements that create the table and its index.</summary>
    public static string CreateTableSql(string table)
    {
        var bare = table[(table.LastIndexOf('.') + 1)..];
        return $"""
            CREATE TABLE IF NOT EXISTS {table} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                client_id text NOT NULL,
                topic text NOT NULL,
                payload bytea NOT NULL,
                qos smallint NOT NULL,
                retain boolean NOT NULL,
                received_at timestamptz NOT NULL);
            CREATE INDEX IF NOT EXISTS {bare}_client_received_idx ON {table} (client_id, received_at);
            """;
    }

    public async Task DeliverAsync(IReadOnlyList<ConnectorMessage> batch, CancellationToken cancellationToken)
    {
        await using var connection = await _source.OpenConnectionAsync(cancellationToken);
        if (!_tableReady)
        {
            await using var create = new NpgsqlCommand(CreateTableSql(_table), connection);
            await create.ExecuteNonQueryAsync(cancellationToken);
            _tableReady = true;
        }

        try
        {
            await using var import = await connection.BeginBinaryImportAsync(_copy, cancellationToken);
            foreach (var message in batch)
            {
                await import.StartRowAsync(cancellationToken);
                await import.WriteAsync(message.ClientId, NpgsqlDbType.Text, cancellationToken);
                await import.WriteAsync(message.Topic, NpgsqlDbType.Text, cancellationToken);
                await import.WriteAsync(message.Payload, NpgsqlDbType.Bytea, cancellationToken);
                await import.WriteAsync((short)message.QoS, NpgsqlDbType.Smallint, cancellationToken);
                await import.WriteAsync(message.Retain, NpgsqlDbType.Boolean, cancellationToken);
                await import.WriteAsync(message.ReceivedAt.UtcDateTime, NpgsqlDbType.TimestampTz, cancellationToken);
            }

            await import.CompleteAsync(cancellationToken);
        }
        catch (PostgresException e) when (e.SqlState == UndefinedTable)
        {
            // Dropped under us: create it again before the retry.
            _tableReady = false;
            throw;
        }
        catch (NpgsqlException e) when (e is not PostgresException)
        {
            // A broken connection (the server restarted): its idle siblings in the pool are broken too.
            _source.Clear();
            throw;
        }
    }

    public ValueTask DisposeAsync() => _source.DisposeAsync();
}
