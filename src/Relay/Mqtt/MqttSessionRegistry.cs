namespace Relay.Server.Mqtt;

/// <summary>
/// The sessions by client id (MQTT 5.0 §4.1) and the set of persistent sessions without a connection: binds
/// connections to sessions (takeover, clean start, resume, only by the session's owner), lets sessions go
/// offline or end, expires offline sessions, publishes delayed wills, and restores persistent sessions at
/// start. Its lock guards the two collections; under it the registry calls only into sessions, which take
/// their own lock after it.
/// </summary>
internal sealed partial class MqttSessionRegistry
{
    private readonly Lock _sync = new();
    private readonly Dictionary<string, MqttSession> _sessions = new(StringComparer.Ordinal);

    // Persistent sessions without a connection: the only ones the expiry sweep has to look at.
    private readonly HashSet<MqttSession> _offline = [];
    private readonly MqttSessionContext _context;
    private readonly MqttRouter _router;
    private readonly IMqttSessionStore _store;
    private readonly IMqttAuthorizer _authorizer;
    private readonly MqttTopicLimits _topicLimits;
    private readonly MqttMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    public MqttSessionRegistry(MqttSessionContext context, MqttRouter router, IMqttSessionStore store, IMqttAuthorizer authorizer, MqttTopicLimits topicLimits, MqttMetrics metrics, TimeProvider time, ILogger<MqttSessionRegistry> logger)
    {
        _context = context;
        _router = router;
        _store = store;
        _authorizer = authorizer;
        _topicLimits = topicLimits;
        _metrics = metrics;
        _time = time;
        _logger = logger;
    }

    public int Count
    {
        get
        {
            lock (_sync)
            {
                return _sessions.Count;
            }
        }
    }

    public MqttSession? Find(string clientId)
    {
        lock (_sync)
        {
            return _sessions.GetValueOrDefault(clientId);
        }
    }

    /// <summary>
    /// Binds a connection to its session (MQTT 5.0 §3.1.2.4, §4.1): an existing connection with the same
    /// client id is taken over [MQTT-3.1.4-3]; clean start discards the old session [MQTT-3.1.2-4], otherwise
    /// it resumes [MQTT-3.1.2-5]. Returns Session Present. A session owned by another principal is neither
    /// resumed, cleared nor taken over: Session is null and the caller refuses the CONNECT, so a client id
    /// never lets one identity read, kick or wipe another's session. A resumed session keeps only the
    /// subscriptions <paramref name="identity"/> may still make. The caller calls <see cref="MqttSession.Resume"/>
    /// once its CONNACK is written.
    /// </summary>
    public async ValueTask<(MqttSession? Session, bool SessionPresent)> AttachAsync(IMqttSessionConnection connection, string clientId, MqttIdentity identity, bool cleanStart, uint expirySeconds, CancellationToken cancellationToken)
    {
        MqttSession? session;
        IMqttSessionConnection? previous;
        bool created = false, wasPersistent;
        lock (_sync)
        {
            if (!_sessions.TryGetValue(clientId, out session))
            {
                session = new MqttSession(clientId, _context);
                _sessions[clientId] = session;
                created = true;
            }

            if (!session.TryAttach(connection, identity.Owner, clear: cleanStart && !created, expirySeconds, out previous, out wasPersistent))
            {
                _metrics.LimitHit(MqttLimit.SessionOwner);
                return (null, false);
            }

            _offline.Remove(session);
        }

        var present = !created && !cleanStart;
        if (created)
        {
            _metrics.Session(+1, expirySeconds > 0);
        }
        else if (wasPersistent != expirySeconds > 0)
        {
            _metrics.PersistenceChanged(expirySeconds > 0);
        }

        previous?.TakeOver();
        if (wasPersistent && (cleanStart || expirySeconds == 0))
        {
            await _store.DeleteSessionAsync(clientId, cancellationToken).ConfigureAwait(false);
        }

        if (present)
        {
            await ReauthorizeAsync(session, identity, cancellationToken).ConfigureAwait(false);
        }

        if (expirySeconds > 0)
        {
            await _store.UpsertSessionAsync(clientId, expirySeconds, null, identity.Owner, cancellationToken).ConfigureAwait(false);
            if (!wasPersistent && present)
            {
                // A session that becomes persistent now must find its subscriptions in the store after a restart.
                foreach (var subscription in session.SnapshotSubscriptions())
                {
                    await _store.UpsertSubscriptionAsync(clientId, subscription.ToPersisted(), cancellationToken).ConfigureAwait(false);
                }
            }
        }

        return (session, present);
    }

    /// <summary>
    /// A connection ended. <c>Detached</c> is false when the session had already moved to another connection
    /// (takeover). A session that is not persistent ends with its connection [MQTT-3.1.2-5 / MQTT-4.1.0-1]; a
    /// persistent one goes offline and keeps a delayed will. <c>PublishWillNow</c>: the will is due now (the
    /// caller publishes it); <c>At</c>: when the session went offline.
    /// </summary>
    public async ValueTask<(bool Detached, bool PublishWillNow, DateTimeOffset At)> DetachAsync(IMqttSessionConnection connection, MqttSession session, StoredMessage? will, uint willDelaySeconds, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        MqttDetach outcome;
        bool publishWillNow;
        lock (_sync)
        {
            outcome = session.Detach(connection, will, willDelaySeconds, now, out publishWillNow);
            if (outcome == MqttDetach.Ended)
            {
                _sessions.Remove(session.ClientId);
            }
            else if (outcome == MqttDetach.Offline)
            {
                _offline.Add(session);
            }
        }

        switch (outcome)
        {
            case MqttDetach.NotAttached:
                return (false, false, now);
            case MqttDetach.Ended:
                _metrics.Session(-1, persistent: false);
                break;
            default:
                await _store.UpsertSessionAsync(session.ClientId, session.ExpirySeconds, now, session.Owner, cancellationToken).ConfigureAwait(false);
                break;
        }

        return (true, publishWillNow, now);
    }

    /// <summary>Sets the expiry a v5 DISCONNECT asked for (§3.14.2.2.2) before the session goes offline; 0 also deletes its stored copy.</summary>
    public async ValueTask SetExpiryAsync(MqttSession session, uint expirySeconds, CancellationToken cancellationToken)
    {
        var wasPersistent = session.SetExpiry(expirySeconds);
        if (wasPersistent != expirySeconds > 0)
        {
            _metrics.PersistenceChanged(expirySeconds > 0);
        }

        if (wasPersistent && expirySeconds == 0)
        {
            await _store.DeleteSessionAsync(session.ClientId, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Ends offline sessions past their expiry and publishes wills whose delay has passed.</summary>
    public async Task ExpireAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        List<MqttSession>? expired = null;
        List<(StoredMessage Will, string ClientId)>? wills = null;
        lock (_sync)
        {
            foreach (var session in _offline)
            {
                if (session.CheckExpiry(now, out var dueWill))
                {
                    (expired ??= []).Add(session);
                }

                if (dueWill is not null)
                {
                    (wills ??= []).Add((dueWill, session.ClientId));
                }
            }

            if (expired is not null)
            {
                foreach (var session in expired)
                {
                    _sessions.Remove(session.ClientId);
                    _offline.Remove(session);

                    // The session ends before the will delay: the will goes now (§3.1.3.2.2).
                    if (session.End() is { } will)
                    {
                        (wills ??= []).Add((will, session.ClientId));
                    }
                }
            }
        }

        if (wills is not null)
        {
            foreach (var (will, clientId) in wills)
            {
                await _router.PublishWillAsync(will, clientId, cancellationToken).ConfigureAwait(false);
            }
        }

        if (expired is not null)
        {
            foreach (var session in expired)
            {
                _metrics.Session(-1, persistent: true);
                LogSessionExpired(session.ClientId);
                await _store.DeleteSessionAsync(session.ClientId, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Loads the persistent sessions at start, before any listener accepts a client; returns how many. A
    /// stored subscription whose filter breaks the topic limits is skipped and deleted.
    /// </summary>
    public async ValueTask<int> RestoreAsync(CancellationToken cancellationToken)
    {
        var sessions = await _store.LoadAllAsync(cancellationToken).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        foreach (var persisted in sessions)
        {
            var session = new MqttSession(persisted.ClientId, _context);
            var messages = persisted.Messages.Select(static message => new MqttOutgoing(message.Message, message.Message.QoS, message.Message.Retain, null)
            {
                Sequence = message.Sequence,
                PacketId = message.PacketId,
                Released = message.Released,
                Sent = message.PacketId != 0,
            });

            // A session that was online when the process died starts its expiry now.
            session.Restore(persisted.Owner, persisted.ExpiryIntervalSeconds, persisted.DisconnectedAt ?? now, messages);
            foreach (var subscription in persisted.Subscriptions)
            {
                if (_topicLimits.Check(subscription.TopicFilter) is { } limit)
                {
                    _topicLimits.Refused(limit, "restore of a subscription", persisted.ClientId, subscription.TopicFilter);
                    LogRestoreSkipped(1, "subscription(s)");
                    await _store.RemoveSubscriptionAsync(persisted.ClientId, subscription.TopicFilter, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                session.TrySubscribe(MqttSubscription.Create(session, subscription), int.MaxValue, out _);
            }

            lock (_sync)
            {
                _sessions[session.ClientId] = session;
                _offline.Add(session);
            }

            _metrics.Session(+1, persistent: true);
        }

        return sessions.Count;
    }

    /// <summary>
    /// A resumed session's subscriptions were authorised for whoever made them, under the rules of that day:
    /// each is checked again for the identity that resumes it, and those it may not make are dropped.
    /// </summary>
    private async ValueTask ReauthorizeAsync(MqttSession session, MqttIdentity identity, CancellationToken cancellationToken)
    {
        List<string>? denied = null;
        foreach (var subscription in session.SnapshotSubscriptions())
        {
            if (!_authorizer.CanSubscribe(identity, session.ClientId, subscription.InnerFilter))
            {
                (denied ??= []).Add(subscription.Filter);
            }
        }

        if (denied is null)
        {
            return;
        }

        foreach (var filter in denied)
        {
            await _router.UnsubscribeAsync(session, filter, cancellationToken).ConfigureAwait(false);
        }

        LogSubscriptionsRevoked(Primitives.LogText.Safe(session.ClientId), denied.Count);
    }

    [LoggerMessage(EventId = 5012, Level = LogLevel.Information, Message = "MQTT: session {ClientId} resumed without {Count} subscription(s) its identity may no longer make")]
    private partial void LogSubscriptionsRevoked(string clientId, int count);

    [LoggerMessage(EventId = 5011, Level = LogLevel.Debug, Message = "MQTT: session {ClientId} expired")]
    private partial void LogSessionExpired(string clientId);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Warning, Message = "MQTT: skipped and deleted {Count} stored {What} whose topic breaks Relay:Mqtt:MaxTopicLevels or MaxTopicLength")]
    private partial void LogRestoreSkipped(int count, string what);
}
