using Microsoft.Data.Sqlite;

namespace Relay.Server.Mqtt.Storage;

/// <summary>
/// Persistent MQTT sessions in <c>mqtt.db</c> (MQTT 5.0 §4.1 Session State: subscriptions, QoS 1/2
/// messages queued or in flight, and the session's expiry). Every method returns after its write
/// committed through <see cref="MqttDatabase"/>'s group commit.
/// </summary>
internal sealed class SqliteMqttSessionStore(MqttDatabase database) : IMqttSessionStore
{
    private static readonly SqlStatement UpsertSession = new(
        """
        INSERT INTO sessions(client_id, expiry_seconds, disconnected_at, owner) VALUES($c, $e, $d, $o)
        ON CONFLICT(client_id) DO UPDATE SET expiry_seconds = excluded.expiry_seconds, disconnected_at = excluded.disconnected_at,
            owner = coalesce(excluded.owner, sessions.owner)
        """,
        "$c", "$e", "$d", "$o");

    private static readonly SqlStatement DeleteSession = new("DELETE FROM sessions WHERE client_id = $c", "$c");
    private static readonly SqlStatement DeleteSubscriptions = new("DELETE FROM subscriptions WHERE client_id = $c", "$c");
    private static readonly SqlStatement DeleteMessages = new("DELETE FROM messages WHERE client_id = $c", "$c");

    private static readonly SqlStatement UpsertSubscription = new(
        """
        INSERT OR REPLACE INTO subscriptions(client_id, filter, qos, no_local, retain_as_published, retain_handling, subscription_id)
        VALUES($c, $f, $q, $n, $r, $h, $i)
        """,
        "$c", "$f", "$q", "$n", "$r", "$h", "$i");

    private static readonly SqlStatement RemoveSubscription = new("DELETE FROM subscriptions WHERE client_id = $c AND filter = $f", "$c", "$f");

    private static readonly SqlStatement InsertMessage = new(
        """
        INSERT INTO messages(client_id, topic, payload, qos, retain, expires_at, properties)
        VALUES($c, $t, $p, $q, $r, $x, $o) RETURNING seq
        """,
        "$c", "$t", "$p", "$q", "$r", "$x", "$o");

    private static readonly SqlStatement MarkSent = new(
        "UPDATE messages SET packet_id = $p, released = $r WHERE client_id = $c AND seq = $s",
        "$c", "$s", "$p", "$r");

    private static readonly SqlStatement RemoveMessage = new("DELETE FROM messages WHERE client_id = $c AND seq = $s", "$c", "$s");

    public ValueTask<IReadOnlyList<PersistedSession>> LoadAllAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var connection = database.OpenReader();
        // One read transaction: the three queries see the same snapshot even while the writer commits.
        using var transaction = connection.BeginTransaction();
        var sessions = new Dictionary<string, (uint Expiry, DateTimeOffset? DisconnectedAt, string? Owner, List<PersistedSubscription> Subscriptions, List<PersistedMessage> Messages)>(StringComparer.Ordinal);
        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT client_id, expiry_seconds, disconnected_at, owner FROM sessions";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                sessions[reader.GetString(0)] = ((uint)reader.GetInt64(1), SqliteValues.ReadTime(reader, 2), reader.IsDBNull(3) ? null : reader.GetString(3), [], []);
            }
        }

        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT client_id, filter, qos, no_local, retain_as_published, retain_handling, subscription_id FROM subscriptions ORDER BY client_id, filter";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                if (sessions.TryGetValue(reader.GetString(0), out var session))
                {
                    session.Subscriptions.Add(new PersistedSubscription(
                        reader.GetString(1), reader.GetByte(2), reader.GetBoolean(3), reader.GetBoolean(4), reader.GetByte(5), (uint)reader.GetInt64(6)));
                }
            }
        }

        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT client_id, seq, topic, payload, qos, retain, expires_at, properties, packet_id, released FROM messages ORDER BY client_id, seq";
            using var reader = command.ExecuteReader();
            while (reader.Read())
            {
                if (sessions.TryGetValue(reader.GetString(0), out var session))
                {
                    var message = new StoredMessage(
                        reader.GetString(2),
                        SqliteValues.ReadBlob(reader, 3),
                        reader.GetByte(4),
                        reader.GetBoolean(5),
                        SqliteValues.ReadTime(reader, 6),
                        ReadProperties(reader, 7));
                    session.Messages.Add(new PersistedMessage(reader.GetInt64(1), message, (ushort)reader.GetInt32(8), reader.GetBoolean(9)));
                }
            }
        }

        var result = new List<PersistedSession>(sessions.Count);
        foreach (var (clientId, s) in sessions)
        {
            result.Add(new PersistedSession(clientId, s.Expiry, s.DisconnectedAt, s.Subscriptions, s.Messages, s.Owner));
        }

        return ValueTask.FromResult<IReadOnlyList<PersistedSession>>(result);
    }

    public async ValueTask UpsertSessionAsync(string clientId, uint expiryIntervalSeconds, DateTimeOffset? disconnectedAt, string? owner, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        await database.WriteAsync(
            context =>
            {
                var command = context.Command(UpsertSession);
                command.Parameters[0].Value = clientId;
                command.Parameters[1].Value = (long)expiryIntervalSeconds;
                command.Parameters[2].Value = SqliteValues.From(disconnectedAt);
                command.Parameters[3].Value = (object?)owner ?? DBNull.Value;
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DeleteSessionAsync(string clientId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        await database.WriteAsync(
            context =>
            {
                foreach (var statement in (ReadOnlySpan<SqlStatement>)[DeleteMessages, DeleteSubscriptions, DeleteSession])
                {
                    var command = context.Command(statement);
                    command.Parameters[0].Value = clientId;
                    command.ExecuteNonQuery();
                }

                return 0;
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask UpsertSubscriptionAsync(string clientId, PersistedSubscription subscription, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        ArgumentNullException.ThrowIfNull(subscription);
        await database.WriteAsync(
            context =>
            {
                var command = context.Command(UpsertSubscription);
                command.Parameters[0].Value = clientId;
                command.Parameters[1].Value = subscription.TopicFilter;
                command.Parameters[2].Value = subscription.MaximumQoS;
                command.Parameters[3].Value = subscription.NoLocal;
                command.Parameters[4].Value = subscription.RetainAsPublished;
                command.Parameters[5].Value = subscription.RetainHandling;
                command.Parameters[6].Value = (long)subscription.SubscriptionIdentifier;
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask RemoveSubscriptionAsync(string clientId, string topicFilter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        ArgumentNullException.ThrowIfNull(topicFilter);
        await database.WriteAsync(
            context =>
            {
                var command = context.Command(RemoveSubscription);
                command.Parameters[0].Value = clientId;
                command.Parameters[1].Value = topicFilter;
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);
    }

    public ValueTask<long[]> EnqueueAsync(IReadOnlyList<(string ClientId, StoredMessage Message)> messages, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0)
        {
            return ValueTask.FromResult(Array.Empty<long>());
        }

        // Encoded here, on the caller, so the writer's time goes to SQLite alone. A fan-out shares one
        // StoredMessage instance among many clients: encode it once.
        var properties = new byte[]?[messages.Count];
        for (var i = 0; i < messages.Count; i++)
        {
            properties[i] = i > 0 && ReferenceEquals(messages[i].Message, messages[i - 1].Message)
                ? properties[i - 1]
                : MqttPropertiesCodec.Encode(messages[i].Message.Properties);
        }

        return database.WriteAsync(
            context =>
            {
                var command = context.Command(InsertMessage);
                var sequences = new long[messages.Count];
                for (var i = 0; i < messages.Count; i++)
                {
                    var (clientId, message) = messages[i];
                    command.Parameters[0].Value = clientId;
                    command.Parameters[1].Value = message.Topic;
                    command.Parameters[2].Value = SqliteValues.Blob(message.Payload);
                    command.Parameters[3].Value = message.QoS;
                    command.Parameters[4].Value = message.Retain;
                    command.Parameters[5].Value = SqliteValues.From(message.ExpiresAt);
                    command.Parameters[6].Value = (object?)properties[i] ?? DBNull.Value;
                    sequences[i] = (long)command.ExecuteScalar()!;
                }

                return sequences;
            },
            cancellationToken);
    }

    public async ValueTask MarkSentAsync(string clientId, long sequence, ushort packetId, bool released, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        await database.WriteAsync(
            context =>
            {
                var command = context.Command(MarkSent);
                command.Parameters[0].Value = clientId;
                command.Parameters[1].Value = sequence;
                command.Parameters[2].Value = packetId;
                command.Parameters[3].Value = released;
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask RemoveMessageAsync(string clientId, long sequence, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(clientId);
        await database.WriteAsync(
            context =>
            {
                var command = context.Command(RemoveMessage);
                command.Parameters[0].Value = clientId;
                command.Parameters[1].Value = sequence;
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);
    }

    internal static MqttMessageProperties? ReadProperties(SqliteDataReader reader, int ordinal)
    {
        if (reader.IsDBNull(ordinal))
        {
            return null;
        }

        var data = (byte[])reader.GetValue(ordinal);
        return MqttPropertiesCodec.TryDecode(data, out var properties)
            ? properties
            : throw new InvalidDataException($"{MqttDatabase.FileName}: a stored message's properties are damaged");
    }
}
