using System.Text;
using Npgsql;
using Relay.Server.Connectors;
using static Relay.Server.Tests.Connectors.ConnectorTestKit;

namespace Relay.Server.Tests.Connectors;

/// <summary>The PostgreSQL connector against a real PostgreSQL server (Debian's package), started by the test class.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PostgresConnectorTests(PostgresServer postgres) : IClassFixture<PostgresServer>
{
    [Fact]
    public async Task MessagesFromMosquittoPub_LandInTheDocumentedTable_OnlyThoseMatchingTheFilter()
    {
        await using var server = await StartAsync("Postgres", $"ConnectionString={postgres.ConnectionString}", "Table=land", "TopicFilter=devices/+/telemetry");

        // The one that does not match goes first over the same connection: by the time the others are rows, it was seen.
        await PublishAsync(server, "devices/d1/state", ["not-for-the-table"]);
        await PublishAsync(server, "devices/d1/telemetry", ["{\"t\":21.5}", "{\"t\":22}", "{\"t\":23}"]);

        var rows = await WaitForRowsAsync(server, "land", 3);
        Assert.Equal(["{\"t\":21.5}", "{\"t\":22}", "{\"t\":23}"], rows.Select(static r => r.Payload));
        Assert.All(rows, static r =>
        {
            Assert.Equal(Device, r.ClientId);
            Assert.Equal("devices/d1/telemetry", r.Topic);
            Assert.Equal(1, r.Qos);
            Assert.False(r.Retain);
            Assert.InRange(r.ReceivedAt, DateTime.UtcNow.AddMinutes(-5), DateTime.UtcNow.AddMinutes(1));
        });

        // The documented schema (docs/data.md).
        await using var connection = await OpenAsync();
        await using var columns = new NpgsqlCommand("SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_name = 'land' ORDER BY ordinal_position", connection);
        var schema = new List<string>();
        await using (var reader = await columns.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                schema.Add(reader.GetString(0));
            }
        }

        Assert.Equal(["id bigint", "client_id text", "topic text", "payload bytea", "qos smallint", "retain boolean", "received_at timestamp with time zone"], schema);
        Assert.Equal(3, Counters(server).Delivered(0));
        Assert.Equal(0, Counters(server).DroppedTotal(0));
    }

    [Fact]
    public async Task TargetGoesDownAndComesBack_NothingIsLostWithinTheLimit_AndPubackNeverWaited()
    {
        await using var server = await StartAsync("Postgres", [$"ConnectionString={postgres.ConnectionString}", "Table=outage", .. QuickBackoff]);
        await PublishAsync(server, "devices/d1/telemetry", ["before"]);
        await WaitForRowsAsync(server, "outage", 1);

        await postgres.StopAsync();
        try
        {
            // mosquitto_pub gets every PUBACK with the database down: the broker never waits for a connector.
            var during = Numbered("during-", 40);
            await PublishAsync(server, "devices/d1/telemetry", during);
            await Poll.UntilAsync(() => Counters(server).SpillMessages(0) == 40, "the 40 messages spilled to disk", describe: () => Task.FromResult(Describe(server)));
            Assert.False(Counters(server).Up(0));

            // The spill is the server's alone: directory 0700, files 0600.
            var spill = ConnectorServices.SpillDirectory(server.DataDirectory, "postgres-0");
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(spill));
            Assert.All(Directory.GetFiles(spill), static f => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(f)));
        }
        finally
        {
            await postgres.StartAsync();
        }

        var rows = await WaitForRowsAsync(server, "outage", 41);
        Assert.Equal(["before", .. Numbered("during-", 40)], rows.Select(static r => r.Payload));
        await Poll.UntilAsync(() => Counters(server).Up(0) && Counters(server).SpillMessages(0) == 0, "the connector up with an empty spill", describe: () => Task.FromResult(Describe(server)));
        Assert.Equal(41, Counters(server).Delivered(0));
        Assert.Equal(0, Counters(server).DroppedTotal(0));
        Assert.True(Counters(server).Retries(0) > 0);
    }

    private async Task<NpgsqlConnection> OpenAsync()
    {
        var connection = new NpgsqlConnection(postgres.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        return connection;
    }

    private async Task<List<Row>> WaitForRowsAsync(RelayTestServer server, string table, int count)
    {
        List<Row> rows = [];
        await Poll.UntilAsync(
            async () =>
            {
                rows = await ReadRowsAsync(table);
                return rows.Count >= count;
            },
            $"{count} rows in {table}",
            TimeSpan.FromSeconds(60),
            TimeSpan.FromMilliseconds(50),
            () => Task.FromResult($"{rows.Count} rows; {Describe(server)}"));
        Assert.Equal(count, rows.Count);
        return rows;
    }

    private async Task<List<Row>> ReadRowsAsync(string table)
    {
        try
        {
            await using var connection = await OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT client_id, topic, payload, qos, retain, received_at FROM {table} ORDER BY id", connection);
            await using var reader = await command.ExecuteReaderAsync();
            var rows = new List<Row>();
            while (await reader.ReadAsync())
            {
                rows.Add(new Row(reader.GetString(0), reader.GetString(1), Encoding.UTF8.GetString((byte[])reader[2]), reader.GetInt16(3), reader.GetBoolean(4), reader.GetDateTime(5)));
            }

            return rows;
        }
        catch (PostgresException e) when (e.SqlState == "42P01")
        {
            return [];
        }
    }

    private sealed record Row(string ClientId, string Topic, string Payload, short Qos, bool Retain, DateTime ReceivedAt);
}
