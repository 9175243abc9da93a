using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.InMemory;

/// <summary>
/// Non-durable <see cref="IMqttSessionStore"/>: persistent sessions outlive their connections but not the
/// process. The store for tests and deployments that accept losing sessions on restart; the SQLite store
/// replaces it by registration.
/// </summary>
internal sealed class InMemorySessionStore : IMqttSessionStore
{
    private readonly Lock _sync = new();
    private readonly Dictionary<string, Entry> _sessions = new(StringComparer.Ordinal);
    private long _sequence;

    public ValueTask<IReadOnlyList<PersistedSession>> LoadAllAsync(CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            IReadOnlyList<PersistedSession> all = _sessions.Select(static pair => new PersistedSession(
                pair.Key,
                pair.Value.Expiry,
                pair.Value.DisconnectedAt,
                pair.Value.Subscriptions.Values.ToArray(),
                pair.Value.Messages.Values.ToArray(),
                pair.Value.Owner)).ToArray();
            return ValueTask.FromResult(all);
        }
    }

    public ValueTask UpsertSessionAsync(string clientId, uint expiryIntervalSeconds, DateTimeOffset? disconnectedAt, string? owner, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            var entry = GetOrAdd(clientId);
            entry.Expiry = expiryIntervalSeconds;
            entry.DisconnectedAt = disconnectedAt;
            entry.Owner = owner ?? entry.Owner;
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask DeleteSessionAsync(string clientId, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            _sessions.Remove(clientId);
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask UpsertSubscriptionAsync(string clientId, PersistedSubscription subscription, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            GetOrAdd(clientId).Subscriptions[subscription.TopicFilter] = subscription;
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask RemoveSubscriptionAsync(string clientId, string topicFilter, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            if (_sessions.TryGetValue(clientId, out var entry))
            {
                entry.Subscriptions.Remove(topicFilter);
            }
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask<long[]> EnqueueAsync(IReadOnlyList<(string ClientId, StoredMessage Message)> messages, CancellationToken cancellationToken)
    {
        var sequences = new long[messages.Count];
        lock (_sync)
        {
            for (var i = 0; i < messages.Count; i++)
            {
                var sequence = ++_sequence;
                sequences[i] = sequence;
                GetOrAdd(messages[i].ClientId).Messages[sequence] = new PersistedMessage(sequence, messages[i].Message, 0, false);
            }
        }

        return ValueTask.FromResult(sequences);
    }

    public ValueTask MarkSentAsync(string clientId, long sequence, ushort packetId, bool released, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            // A mark that lost the race with the acknowledgement finds nothing to update, which is fine.
            if (_sessions.TryGetValue(clientId, out var entry) && entry.Messages.TryGetValue(sequence, out var message))
            {
                entry.Messages[sequence] = message with { PacketId = packetId, Released = released };
            }
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask RemoveMessageAsync(string clientId, long sequence, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            if (_sessions.TryGetValue(clientId, out var entry))
            {
                entry.Messages.Remove(sequence);
            }
        }

        return ValueTask.CompletedTask;
    }

    private Entry GetOrAdd(string clientId)
    {
        if (!_sessions.TryGetValue(clientId, out var entry))
        {
            entry = new Entry();
            _sessions[clientId] = entry;
        }

        return entry;
    }

    private sealed class Entry
    {
        public uint Expiry { get; set; }

        public DateTimeOffset? DisconnectedAt { get; set; }

        public string? Owner { get; set; }

        public Dictionary<string, PersistedSubscription> Subscriptions { get; } = new(StringComparer.Ordinal);

        public SortedDictionary<long, PersistedMessage> Messages { get; } = [];
    }
}
