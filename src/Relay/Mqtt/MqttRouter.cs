namespace Relay.Server.Mqtt;

/// <summary>
/// Routes application messages (MQTT 5.0 §4.7, §4.8): a PUBLISH goes through the subscription index to every
/// matching session, one copy per session, one member per shared group, and the QoS 1/2 copies for persistent
/// sessions are in the store before the publisher is acknowledged. Subscriptions are made and removed here
/// (the session keeps the index in step), and retained messages are set here and sent after a SUBSCRIBE.
/// Holds no lock and no mutable state of its own beyond per-thread scratch lists.
/// </summary>
internal sealed partial class MqttRouter
{
    [ThreadStatic]
    private static List<MqttSubscription>? t_matches;

    [ThreadStatic]
    private static Dictionary<MqttSession, int>? t_index;

    private readonly MqttSubscriptionTree _subscriptions;
    private readonly MqttRetainedMessages _retained;
    private readonly IMqttSessionStore _store;
    private readonly int _maxSubscriptionsPerSession;
    private readonly MqttMetrics _metrics;
    private readonly ILogger _logger;

    // A client reaching its subscription limit can do it at will: one line per 10 s (review M6).
    private readonly Primitives.LogThrottle _logThrottle = new(1);

    public MqttRouter(MqttSubscriptionTree subscriptions, MqttRetainedMessages retained, IMqttSessionStore store, MqttOptions options, MqttMetrics metrics, ILogger<MqttRouter> logger)
    {
        _subscriptions = subscriptions;
        _retained = retained;
        _store = store;
        _maxSubscriptionsPerSession = options.MaxSubscriptionsPerSession;
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>
    /// Routes an application message to every matching subscription (§4.7, §4.8) and returns how many
    /// sessions it was given to. For persistent sessions, QoS 1/2 copies are in the store when this returns,
    /// so the publisher's PUBACK / PUBREC may go out after it (a SIGKILL after the ack loses nothing).
    /// </summary>
    public ValueTask<int> PublishAsync(StoredMessage message, string? publisherClientId, bool persistRetained, CancellationToken cancellationToken) =>
        PublishAsync(message, publisherClientId, persistRetained, refuseIfNotRetained: false, cancellationToken);

    /// <summary>
    /// As above; with <paramref name="refuseIfNotRetained"/> a retained message that a retained bound refused is
    /// not routed either and -1 is returned (an MQTT 5 publisher is told 0x97). Otherwise it is routed unretained.
    /// </summary>
    public async ValueTask<int> PublishAsync(StoredMessage message, string? publisherClientId, bool persistRetained, bool refuseIfNotRetained, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message.Retain
            && !await _retained.SetAsync(message, publisherClientId, persistRetained, cancellationToken).ConfigureAwait(false)
            && refuseIfNotRetained)
        {
            return -1;
        }

        // Scratch collections reused per thread: they are used only before the first await below.
        var matches = t_matches ??= [];
        matches.Clear();
        _subscriptions.Match(message.Topic, matches);
        if (matches.Count == 0)
        {
            return 0;
        }

        var targets = new List<(MqttSession Session, MqttOutgoing Outgoing)>(matches.Count);
        Dictionary<MqttSession, int>? index = null;
        if (matches.Count > 1)
        {
            index = t_index ??= [];
            index.Clear();
        }

        foreach (var subscription in matches)
        {
            // [MQTT-3.8.3-3]: No Local; not applicable to shared subscriptions [MQTT-3.8.3-4].
            if (subscription.NoLocal && subscription.ShareGroup is null && subscription.Session.ClientId == publisherClientId)
            {
                continue;
            }

            var qos = Math.Min(message.QoS, subscription.MaximumQoS);

            // [MQTT-3.3.1-12]: Retain As Published 0 forwards with RETAIN=0; 1 keeps the publisher's flag [MQTT-3.3.1-13].
            var retain = subscription.RetainAsPublished && message.Retain;
            var id = subscription.SubscriptionIdentifier;
            if (index is not null && index.TryGetValue(subscription.Session, out var at))
            {
                // Overlapping subscriptions of one session: one copy at the highest QoS carrying every
                // subscription identifier (MQTT 5.0 §3.3.4).
                var existing = targets[at].Outgoing;
                var ids = existing.SubscriptionIdentifiers;
                if (id != 0)
                {
                    ids = ids is null ? [id] : [.. ids, id];
                }

                targets[at] = (subscription.Session, new MqttOutgoing(message, Math.Max(existing.QoS, qos), existing.Retain || retain, ids));
                continue;
            }

            index?.Add(subscription.Session, targets.Count);
            targets.Add((subscription.Session, new MqttOutgoing(message, qos, retain, id == 0 ? null : [id])));
        }

        matches.Clear();
        index?.Clear();
        await DeliverAsync(targets, cancellationToken).ConfigureAwait(false);
        return targets.Count;
    }

    /// <summary>Persists the QoS 1/2 copies for persistent sessions, then hands every copy to its session.</summary>
    public async ValueTask DeliverAsync(List<(MqttSession Session, MqttOutgoing Outgoing)> targets, CancellationToken cancellationToken)
    {
        List<(string ClientId, StoredMessage Message)>? batch = null;
        List<MqttOutgoing>? batched = null;
        foreach (var (session, outgoing) in targets)
        {
            if (outgoing.QoS > 0 && session.Persistent)
            {
                (batch ??= []).Add((session.ClientId, outgoing.Message with { QoS = outgoing.QoS, Retain = outgoing.Retain }));
                (batched ??= []).Add(outgoing);
            }
        }

        if (batch is not null)
        {
            var sequences = await _store.EnqueueAsync(batch, cancellationToken).ConfigureAwait(false);
            for (var i = 0; i < sequences.Length; i++)
            {
                batched![i].Sequence = sequences[i];
            }
        }

        foreach (var (session, outgoing) in targets)
        {
            session.Offer(outgoing);
        }
    }

    /// <summary>Publishes a client's will (§3.1.3.2) on its behalf.</summary>
    public async ValueTask PublishWillAsync(StoredMessage will, string clientId, CancellationToken cancellationToken)
    {
        LogWill(clientId, will.Topic);
        await PublishAsync(will, clientId, persistRetained: true, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Adds or replaces <paramref name="session"/>'s subscription (§3.8.4) and stores it when the session is
    /// persistent. Null when a new filter would go past Relay:Mqtt:MaxSubscriptionsPerSession;
    /// <c>Existed</c>: the filter was already subscribed (Retain Handling 1 sends nothing then, §3.8.3.1).
    /// </summary>
    public async ValueTask<(MqttSubscription? Subscription, bool Existed)> SubscribeAsync(MqttSession session, PersistedSubscription persisted, CancellationToken cancellationToken)
    {
        var subscription = MqttSubscription.Create(session, persisted);
        if (!session.TrySubscribe(subscription, _maxSubscriptionsPerSession, out var existed))
        {
            _metrics.LimitHit(MqttLimit.SubscriptionsPerSession);
            if (_logThrottle.TryEnter(0, out var suppressed))
            {
                LogSubscriptionLimit(Primitives.LogText.Safe(session.ClientId), _maxSubscriptionsPerSession, suppressed);
            }
            return (null, existed);
        }

        if (session.Persistent)
        {
            await _store.UpsertSubscriptionAsync(session.ClientId, persisted, cancellationToken).ConfigureAwait(false);
        }

        return (subscription, existed);
    }

    /// <summary>Removes <paramref name="session"/>'s subscription to <paramref name="filter"/> (§3.10.4), from the store too; false when it had none.</summary>
    public async ValueTask<bool> UnsubscribeAsync(MqttSession session, string filter, CancellationToken cancellationToken)
    {
        var removed = session.Unsubscribe(filter);
        if (removed && session.Persistent)
        {
            await _store.RemoveSubscriptionAsync(session.ClientId, filter, cancellationToken).ConfigureAwait(false);
        }

        return removed;
    }

    /// <summary>Sends the retained messages matching a new subscription to its session (§3.8.4), with RETAIN=1 [MQTT-3.3.1-9].</summary>
    public async ValueTask SendRetainedAsync(MqttSubscription subscription, CancellationToken cancellationToken)
    {
        var retained = _retained.Match(subscription.InnerFilter);
        if (retained.Count == 0)
        {
            return;
        }

        var ids = subscription.SubscriptionIdentifier == 0 ? null : new[] { subscription.SubscriptionIdentifier };
        var targets = new List<(MqttSession Session, MqttOutgoing Outgoing)>(retained.Count);
        foreach (var message in retained)
        {
            targets.Add((subscription.Session, new MqttOutgoing(message, Math.Min(message.QoS, subscription.MaximumQoS), true, ids)));
        }

        await DeliverAsync(targets, cancellationToken).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 5022, Level = LogLevel.Debug, Message = "MQTT: publishing the will of {ClientId} to {Topic}")]
    private partial void LogWill(string clientId, string topic);

    [LoggerMessage(EventId = 5122, Level = LogLevel.Information, Message = "MQTT client {ClientId}: subscription refused, {Limit} already (Relay:Mqtt:MaxSubscriptionsPerSession) ({Suppressed} more since the last such line)")]
    private partial void LogSubscriptionLimit(string clientId, int limit, long suppressed);
}
