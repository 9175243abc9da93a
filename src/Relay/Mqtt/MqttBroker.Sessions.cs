using System.Collections.Concurrent;
using System.Net;

namespace Relay.Server.Mqtt;

internal sealed partial class MqttBroker
{
    private readonly ConcurrentDictionary<IPAddress, int> _connectionsPerIp = new();

    /// <summary>Counts a connection from <paramref name="ip"/>; false when Relay:Mqtt:MaxConnectionsPerIp is reached.</summary>
    public bool TryEnterIp(IPAddress ip)
    {
        while (true)
        {
            var current = _connectionsPerIp.GetOrAdd(ip, 0);
            if (current >= _options.MaxConnectionsPerIp)
            {
                _metrics.LimitHit(MqttLimit.ConnectionsPerIp);
                LogConnectionLimit(ip, _options.MaxConnectionsPerIp);
                return false;
            }

            if (_connectionsPerIp.TryUpdate(ip, current + 1, current))
            {
                return true;
            }
        }
    }

    public void LeaveIp(IPAddress ip)
    {
        while (_connectionsPerIp.TryGetValue(ip, out var current))
        {
            if (current <= 1 ? _connectionsPerIp.TryRemove(new KeyValuePair<IPAddress, int>(ip, current)) : _connectionsPerIp.TryUpdate(ip, current - 1, current))
            {
                return;
            }
        }
    }

    /// <summary>
    /// Binds a connection to its session (MQTT 5.0 §3.1.2.4, §4.1): an existing connection with the same
    /// client id is taken over [MQTT-3.1.4-3]; clean start discards the old session [MQTT-3.1.2-4], otherwise
    /// it resumes [MQTT-3.1.2-5]. Returns Session Present. A session owned by another principal is neither
    /// resumed, cleared nor taken over: State is null and the caller refuses the CONNECT, so a client id
    /// never lets one identity read, kick or wipe another's session. A resumed session keeps only the
    /// subscriptions <paramref name="identity"/> may still make.
    /// </summary>
    public async ValueTask<(MqttSession? State, bool SessionPresent)> AttachAsync(MqttConnection connection, string clientId, MqttIdentity identity, bool cleanStart, uint expirySeconds, CancellationToken cancellationToken)
    {
        MqttSession? state;
        MqttConnection? previous;
        bool created = false, present, wasPersistent;
        lock (_sessionsLock)
        {
            if (!_sessions.TryGetValue(clientId, out state))
            {
                state = new MqttSession(clientId) { Owner = identity.Owner };
                _sessions[clientId] = state;
                created = true;
            }
            else if (state.Owner is { } owner && !string.Equals(owner, identity.Owner, StringComparison.Ordinal))
            {
                _metrics.LimitHit(MqttLimit.SessionOwner);
                return (null, false);
            }

            state.Owner = identity.Owner;

            _offline.Remove(state);
            lock (state.Sync)
            {
                previous = state.Connection;
                state.Connection = connection;

                // MQTT 5.0 §3.1.3.2.2: a reconnect within the Will Delay Interval cancels the will.
                state.PendingWill = null;
                wasPersistent = state.Persistent;
                if (cleanStart && !created)
                {
                    ClearLocked(state);
                }

                present = !created && !cleanStart;
                state.ExpirySeconds = expirySeconds;
                state.DisconnectedAt = null;
            }
        }

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
            await _sessionStore.DeleteSessionAsync(clientId, cancellationToken).ConfigureAwait(false);
        }

        if (present)
        {
            await ReauthorizeAsync(state, identity, cancellationToken).ConfigureAwait(false);
        }

        if (expirySeconds > 0)
        {
            await _sessionStore.UpsertSessionAsync(clientId, expirySeconds, null, identity.Owner, cancellationToken).ConfigureAwait(false);
            if (!wasPersistent && present)
            {
                // A session that becomes persistent now must find its subscriptions in the store after a restart.
                foreach (var subscription in SnapshotSubscriptions(state))
                {
                    await _sessionStore.UpsertSubscriptionAsync(clientId, subscription, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        return (state, present);
    }

    /// <summary>
    /// A connection ended. Returns false when the session had already moved to another connection
    /// (takeover). A session that is not persistent ends with its connection [MQTT-3.1.2-5 / MQTT-4.1.0-1].
    /// </summary>
    public async ValueTask<bool> DetachAsync(MqttConnection connection, MqttSession state, StoredMessage? will, uint willDelaySeconds, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        bool ended = false, persistent;
        var publishWillNow = false;
        lock (_sessionsLock)
        {
            lock (state.Sync)
            {
                if (state.Connection != connection)
                {
                    return false;
                }

                state.Connection = null;
                persistent = state.Persistent;
                if (!persistent)
                {
                    _sessions.Remove(state.ClientId);
                    state.Ended = true;
                    ClearLocked(state);
                    ended = true;
                    publishWillNow = will is not null;
                }
                else
                {
                    state.DisconnectedAt = now;
                    _offline.Add(state);
                    DropTaggedLocked(state);
                    if (will is not null)
                    {
                        // Published at min(will delay, session expiry) (§3.1.3.2.2).
                        var delay = Math.Min(willDelaySeconds, state.ExpirySeconds);
                        if (delay == 0)
                        {
                            publishWillNow = true;
                        }
                        else
                        {
                            state.PendingWill = new MqttPendingWill(will, now.AddSeconds(delay));
                        }
                    }
                }
            }
        }

        if (ended)
        {
            _metrics.Session(-1, persistent: false);
        }
        else
        {
            await _sessionStore.UpsertSessionAsync(state.ClientId, state.ExpirySeconds, now, state.Owner, cancellationToken).ConfigureAwait(false);
        }

        NotifyDisconnected(state.ClientId, now);
        if (publishWillNow)
        {
            await PublishWillAsync(will!, state.ClientId, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>
    /// A resumed session's subscriptions were authorised for whoever made them, under the rules of that day:
    /// each is checked again for the identity that resumes it, and those it may not make are dropped.
    /// </summary>
    private async ValueTask ReauthorizeAsync(MqttSession state, MqttIdentity identity, CancellationToken cancellationToken)
    {
        List<string>? denied = null;
        lock (state.Sync)
        {
            if (state.Subscriptions is { } subscriptions)
            {
                foreach (var subscription in subscriptions.Values)
                {
                    if (!Authorizer.CanSubscribe(identity, state.ClientId, subscription.InnerFilter))
                    {
                        (denied ??= []).Add(subscription.Filter);
                    }
                }
            }
        }

        if (denied is null)
        {
            return;
        }

        foreach (var filter in denied)
        {
            if (RemoveSubscription(state, filter) && state.Persistent)
            {
                await _sessionStore.RemoveSubscriptionAsync(state.ClientId, filter, cancellationToken).ConfigureAwait(false);
            }
        }

        LogSubscriptionsRevoked(Primitives.LogText.Safe(state.ClientId), denied.Count);
    }

    /// <summary>Updates the expiry a v5 DISCONNECT asked for (§3.14.2.2.2) before the session goes offline.</summary>
    public void SetExpiry(MqttSession state, uint expirySeconds)
    {
        lock (state.Sync)
        {
            if (state.Persistent != expirySeconds > 0)
            {
                _metrics.PersistenceChanged(expirySeconds > 0);
            }

            state.ExpirySeconds = expirySeconds;
        }
    }

    public MqttSession? FindSession(string clientId)
    {
        lock (_sessionsLock)
        {
            return _sessions.GetValueOrDefault(clientId);
        }
    }

    private static PersistedSubscription[] SnapshotSubscriptions(MqttSession state)
    {
        lock (state.Sync)
        {
            return state.Subscriptions is null ? [] : state.Subscriptions.Values.Select(static s => s.ToPersisted()).ToArray();
        }
    }

    /// <summary>Drops everything a session holds; the caller holds its lock.</summary>
    private void ClearLocked(MqttSession state)
    {
        if (state.Subscriptions is { } subscriptions)
        {
            foreach (var subscription in subscriptions.Values)
            {
                Tree.Remove(subscription);
            }

            _metrics.Subscriptions(-subscriptions.Count);
            state.Subscriptions = null;
        }

        state.Queue = null;
        state.Inflight = null;
        state.InboundQoS2 = null;
    }

    /// <summary>Ends offline sessions past their expiry and publishes wills whose delay has passed.</summary>
    private async Task ExpireSessionsAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        List<MqttSession>? expired = null;
        List<(StoredMessage Will, string ClientId)>? wills = null;
        lock (_sessionsLock)
        {
            foreach (var state in _offline)
            {
                lock (state.Sync)
                {
                    if (state.Connection is not null || state.DisconnectedAt is not { } since)
                    {
                        continue;
                    }

                    if (state.PendingWill is { } will && will.DueAt <= now)
                    {
                        (wills ??= []).Add((will.Message, state.ClientId));
                        state.PendingWill = null;
                    }

                    if (state.ExpirySeconds != uint.MaxValue && since.AddSeconds(state.ExpirySeconds) <= now)
                    {
                        (expired ??= []).Add(state);
                    }
                }
            }

            if (expired is not null)
            {
                foreach (var state in expired)
                {
                    _sessions.Remove(state.ClientId);
                    _offline.Remove(state);
                    lock (state.Sync)
                    {
                        state.Ended = true;
                        if (state.PendingWill is { } will)
                        {
                            // The session ends before the will delay: the will goes now (§3.1.3.2.2).
                            (wills ??= []).Add((will.Message, state.ClientId));
                            state.PendingWill = null;
                        }

                        ClearLocked(state);
                    }
                }
            }
        }

        if (wills is not null)
        {
            foreach (var (will, clientId) in wills)
            {
                await PublishWillAsync(will, clientId, cancellationToken).ConfigureAwait(false);
            }
        }

        if (expired is not null)
        {
            foreach (var state in expired)
            {
                _metrics.Session(-1, persistent: true);
                LogSessionExpired(state.ClientId);
                await _sessionStore.DeleteSessionAsync(state.ClientId, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    [LoggerMessage(EventId = 5010, Level = LogLevel.Information, Message = "MQTT: refused a connection from {Address}: {Limit} already open from it (Relay:Mqtt:MaxConnectionsPerIp)")]
    private partial void LogConnectionLimit(IPAddress address, int limit);

    [LoggerMessage(EventId = 5012, Level = LogLevel.Information, Message = "MQTT: session {ClientId} resumed without {Count} subscription(s) its identity may no longer make")]
    private partial void LogSubscriptionsRevoked(string clientId, int count);

    [LoggerMessage(EventId = 5011, Level = LogLevel.Debug, Message = "MQTT: session {ClientId} expired")]
    private partial void LogSessionExpired(string clientId);
}
