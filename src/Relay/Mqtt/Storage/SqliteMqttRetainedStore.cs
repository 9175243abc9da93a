namespace Relay.Server.Mqtt.Storage;

/// <summary>
/// Retained messages in <c>mqtt.db</c>, one per topic (MQTT 5.0 §3.3.1.3). A retained message with
/// an empty payload removes the topic's retained message and is itself not stored [MQTT-3.3.1-6]
/// [MQTT-3.3.1-7]. The total bound (<c>Relay:Mqtt:MaxRetainedMessages</c>) is the engine's to enforce:
/// the contract gives the store no way to refuse.
/// </summary>
internal sealed class SqliteMqttRetainedStore(MqttDatabase database, TimeProvider time) : IMqttRetainedStore
{
    private static readonly SqlStatement Upsert = new(
        "INSERT OR REPLACE INTO retained(topic, payload, qos, expires_at, properties, owner) VALUES($t, $p, $q, $x, $o, $w)",
        "$t", "$p", "$q", "$x", "$o", "$w");

    private static readonly SqlStatement Delete = new("DELETE FROM retained WHERE topic = $t", "$t");
    private static readonly SqlStatement DeleteExpired = new("DELETE FROM retained WHERE expires_at IS NOT NULL AND expires_at <= $now", "$now");

    public async ValueTask<IReadOnlyList<StoredMessage>> LoadAllAsync(CancellationToken cancellationToken)
    {
        // Messages whose Message Expiry Interval passed while we were down must not be delivered
        // (MQTT 5.0 §3.3.2.3.3); drop them from the file instead of carrying them forever.
        var now = time.GetUtcNow();
        await database.WriteAsync(
            context =>
            {
                var command = context.Command(DeleteExpired);
                command.Parameters[0].Value = now.ToUnixTimeMilliseconds();
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);

        using var connection = database.OpenReader();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT topic, payload, qos, expires_at, properties, owner FROM retained ORDER BY topic";
        using var reader = command.ExecuteReader();
        var result = new List<StoredMessage>();
        while (reader.Read())
        {
            result.Add(new StoredMessage(
                reader.GetString(0),
                SqliteValues.ReadBlob(reader, 1),
                reader.GetByte(2),
                Retain: true,
                SqliteValues.ReadTime(reader, 3),
                SqliteMqttSessionStore.ReadProperties(reader, 4))
            {
                Publisher = reader.IsDBNull(5) ? null : reader.GetString(5),
            });
        }

        return result;
    }

    public async ValueTask SetAsync(StoredMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        var properties = MqttPropertiesCodec.Encode(message.Properties);
        await database.WriteAsync(
            context =>
            {
                if (message.Payload.IsEmpty)
                {
                    var delete = context.Command(Delete);
                    delete.Parameters[0].Value = message.Topic;
                    return delete.ExecuteNonQuery();
                }

                var command = context.Command(Upsert);
                command.Parameters[0].Value = message.Topic;
                command.Parameters[1].Value = SqliteValues.Blob(message.Payload);
                command.Parameters[2].Value = message.QoS;
                command.Parameters[3].Value = SqliteValues.From(message.ExpiresAt);
                command.Parameters[4].Value = (object?)properties ?? DBNull.Value;
                command.Parameters[5].Value = (object?)message.Publisher ?? DBNull.Value;
                return command.ExecuteNonQuery();
            },
            cancellationToken).ConfigureAwait(false);
    }
}
