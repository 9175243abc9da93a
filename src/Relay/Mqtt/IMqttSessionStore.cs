namespace Relay.Server.Mqtt;

// What survives a restart of a session, and the store seam behind it: the engine depends only on this
// interface, so another store can replace the embedded SQLite one.

/// <summary>A persisted subscription of a session (the filter as the client sent it, <c>$share/</c> included).</summary>
internal sealed record PersistedSubscription(
    string TopicFilter,
    byte MaximumQoS,
    bool NoLocal,
    bool RetainAsPublished,
    byte RetainHandling,
    uint SubscriptionIdentifier);

/// <summary>An outbound message queued for (or in flight to) a session, in the order it must be delivered.</summary>
/// <param name="Sequence">Store-assigned, strictly increasing per session.</param>
/// <param name="PacketId">0 until sent; then the packet identifier used (resent with DUP after a reconnect).</param>
/// <param name="Released">QoS 2 only: PUBREC received, so PUBREL (not PUBLISH) is what to resend.</param>
internal sealed record PersistedMessage(long Sequence, StoredMessage Message, ushort PacketId, bool Released);

/// <summary>A persistent session as loaded on reconnect or at start.</summary>
internal sealed record PersistedSession(
    string ClientId,
    uint ExpiryIntervalSeconds,
    DateTimeOffset? DisconnectedAt,
    IReadOnlyList<PersistedSubscription> Subscriptions,
    IReadOnlyList<PersistedMessage> Messages,
    string? Owner = null);

/// <summary>
/// Persistent sessions. Every call that returns has been committed (WAL): a SIGKILL right after it
/// loses nothing. Implementations may batch concurrent calls into one transaction (group commit).
/// </summary>
internal interface IMqttSessionStore
{
    /// <summary>All persistent sessions (subscriptions and messages), at start.</summary>
    ValueTask<IReadOnlyList<PersistedSession>> LoadAllAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Creates or updates a session's expiry and owner (<see cref="MqttIdentity.Owner"/>; null keeps the
    /// stored one); <paramref name="disconnectedAt"/> null means online.
    /// </summary>
    ValueTask UpsertSessionAsync(string clientId, uint expiryIntervalSeconds, DateTimeOffset? disconnectedAt, string? owner, CancellationToken cancellationToken);

    /// <summary>Deletes a session with its subscriptions and messages (clean start, expiry).</summary>
    ValueTask DeleteSessionAsync(string clientId, CancellationToken cancellationToken);

    /// <summary>Adds or replaces (same filter) a subscription.</summary>
    ValueTask UpsertSubscriptionAsync(string clientId, PersistedSubscription subscription, CancellationToken cancellationToken);

    ValueTask RemoveSubscriptionAsync(string clientId, string topicFilter, CancellationToken cancellationToken);

    /// <summary>Appends one message per (client, message) pair in one transaction; returns their sequences in order.</summary>
    ValueTask<long[]> EnqueueAsync(IReadOnlyList<(string ClientId, StoredMessage Message)> messages, CancellationToken cancellationToken);

    /// <summary>Records that a queued message went out with <paramref name="packetId"/> (and, for QoS 2, whether PUBREC came back).</summary>
    ValueTask MarkSentAsync(string clientId, long sequence, ushort packetId, bool released, CancellationToken cancellationToken);

    /// <summary>Removes a delivered (PUBACK / PUBCOMP), expired or dropped message.</summary>
    ValueTask RemoveMessageAsync(string clientId, long sequence, CancellationToken cancellationToken);
}
