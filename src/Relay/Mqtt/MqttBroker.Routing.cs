namespace Relay.Server.Mqtt;

internal sealed partial class MqttBroker
{
    private readonly Lock _retainedLock = new();
    [ThreadStatic]
    private static List<MqttSubscription>? t_matches;

    [ThreadStatic]
    private static Dictionary<MqttSession, int>? t_index;

    private readonly MqttRetainedTree _retained = new();

    /// <summary>
    /// Routes an application message to every matching subscription (§4.7, §4.8) and returns how many
    /// sessions it was given to. For persistent sessions, QoS 1/2 copies are in the store when this returns,
    /// so the publisher's PUBACK / PUBREC may go out after it (a SIGKILL after the ack loses nothing).
    /// </summary>
    public async ValueTask<int> PublishAsync(StoredMessage message, string? publisherClientId, bool persistRetained, CancellationToken cancellationToken)
    {
        if (message.Retain)
        {
            await SetRetainedAsync(message, persistRetained, cancellationToken).ConfigureAwait(false);
        }

        // Scratch collections reused per thread: they are used only before the first await below.
        var matches = t_matches ??= [];
        matches.Clear();
        Tree.Match(message.Topic, matches);
        if (matches.Count == 0)
        {
            return 0;
        }

        var targets = new List<(MqttSession State, MqttOutgoing Outgoing)>(matches.Count);
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
    public async ValueTask DeliverAsync(List<(MqttSession State, MqttOutgoing Outgoing)> targets, CancellationToken cancellationToken)
    {
        List<(string ClientId, StoredMessage Message)>? batch = null;
        List<MqttOutgoing>? batched = null;
        foreach (var (state, outgoing) in targets)
        {
            if (outgoing.QoS > 0 && state.Persistent)
            {
                (batch ??= []).Add((state.ClientId, outgoing.Message with { QoS = outgoing.QoS, Retain = outgoing.Retain }));
                (batched ??= []).Add(outgoing);
            }
        }

        if (batch is not null)
        {
            var sequences = await _sessionStore.EnqueueAsync(batch, cancellationToken).ConfigureAwait(false);
            for (var i = 0; i < sequences.Length; i++)
            {
                batched![i].Sequence = sequences[i];
            }
        }

        foreach (var (state, outgoing) in targets)
        {
            Offer(state, outgoing);
        }
    }

    /// <summary>Sends now when the window allows, otherwise queues (bounded by MaxQueuedMessages).</summary>
    private void Offer(MqttSession state, MqttOutgoing outgoing)
    {
        lock (state.Sync)
        {
            if (state.Ended)
            {
                ForgetLocked(state, outgoing);
                return;
            }

            var connection = state.Connection;
            if (outgoing.QoS == 0)
            {
                if (connection is null)
                {
                    // QoS 0 is "at most once": an offline session does not queue it.
                    _metrics.Drop(MqttDropReason.OfflineQoS0);
                    return;
                }

                connection.SendPublish(outgoing, dup: false);
                return;
            }

            if (connection is not null && state.QueuedCount == 0 && state.InflightCount < connection.SendWindow && !connection.IsClosing)
            {
                SendNewLocked(state, connection, outgoing);
                return;
            }

            state.Queue ??= new();
            if (state.Queue.Count >= _options.MaxQueuedMessages)
            {
                _metrics.LimitHit(MqttLimit.QueuedMessages);
                _metrics.Drop(MqttDropReason.QueueFull);
                var victim = DropOldest ? state.Queue.Dequeue() : outgoing;
                if (!state.QueueFullLogged)
                {
                    // One line per overflow episode (every drop is counted): a stuck subscriber must not flood the log.
                    state.QueueFullLogged = true;
                    LogQueueFull(state.ClientId, _options.MaxQueuedMessages, DropOldest ? "oldest" : "newest");
                }
                ForgetLocked(state, victim);
                if (victim == outgoing)
                {
                    return;
                }
            }

            state.Queue.Enqueue(outgoing);
        }
    }

    /// <summary>Sends queued messages while the client's Receive Maximum allows (MQTT 5.0 §4.9). Caller holds the lock.</summary>
    public void PumpLocked(MqttSession state)
    {
        var connection = state.Connection;
        while (connection is not null && !connection.IsClosing && state.Queue is { Count: > 0 } queue && state.InflightCount < connection.SendWindow)
        {
            SendNewLocked(state, connection, queue.Dequeue());
            state.QueueFullLogged = false;
        }
    }

    /// <summary>
    /// After a reconnect without clean start: unacknowledged PUBLISHes again with DUP=1 and PUBRELs again,
    /// in their original order [MQTT-4.4.0-1], then the queue. Caller holds the lock.
    /// </summary>
    public void ResumeLocked(MqttSession state, MqttConnection connection)
    {
        if (state.Inflight is { } inflight)
        {
            foreach (var outgoing in inflight.ToArray())
            {
                if (outgoing.Released)
                {
                    connection.SendPubRel(outgoing.PacketId);
                    continue;
                }

                switch (connection.SendPublish(outgoing, dup: outgoing.Sent))
                {
                    case MqttSendResult.Sent:
                        outgoing.Sent = true;
                        break;
                    case MqttSendResult.Dropped:
                        // Too large for this client's Maximum Packet Size: it can never be delivered here.
                        inflight.Remove(outgoing);
                        ForgetLocked(state, outgoing);
                        break;
                }
            }
        }

        PumpLocked(state);
    }

    /// <summary>A message left the session (acknowledged, expired or dropped): remove its stored copy.</summary>
    public void ForgetLocked(MqttSession state, MqttOutgoing outgoing)
    {
        if (outgoing.Sequence != 0)
        {
            QueueStoreOp(new StoreOp(state.ClientId, outgoing.Sequence, 0, false, Remove: true));
        }
    }

    private void SendNewLocked(MqttSession state, MqttConnection connection, MqttOutgoing outgoing)
    {
        if (outgoing.Message.ExpiresAt is { } expires && expires <= _time.GetUtcNow())
        {
            // MQTT 5.0 §3.3.2.3.3: an expired message is not delivered.
            _metrics.Drop(MqttDropReason.Expired);
            ForgetLocked(state, outgoing);
            return;
        }

        outgoing.PacketId = state.NextPacketId();
        var result = connection.SendPublish(outgoing, dup: false);
        if (result == MqttSendResult.Dropped)
        {
            ForgetLocked(state, outgoing);
            return;
        }

        // Closed: the connection went away under us; kept in flight unsent, it goes out first on the next connection.
        outgoing.Sent = result == MqttSendResult.Sent;
        (state.Inflight ??= []).Add(outgoing);
        if (outgoing.Sequence != 0)
        {
            QueueStoreOp(new StoreOp(state.ClientId, outgoing.Sequence, outgoing.PacketId, false, Remove: false));
        }
    }

    /// <summary>Stores or clears a topic's retained message [MQTT-3.3.1-5], [MQTT-3.3.1-10/11]; bounded by MaxRetainedMessages.</summary>
    private async ValueTask SetRetainedAsync(StoredMessage message, bool persist, CancellationToken cancellationToken)
    {
        lock (_retainedLock)
        {
            if (message.Payload.IsEmpty)
            {
                // [MQTT-3.3.1-10]: an empty retained payload removes the retained message and is not stored.
                _retained.Remove(message.Topic);
            }
            else if (!_retained.Contains(message.Topic) && _retained.Count >= _options.MaxRetainedMessages)
            {
                _metrics.LimitHit(MqttLimit.RetainedMessages);
                _metrics.Drop(MqttDropReason.RetainedLimit);
                LogRetainedLimit(message.Topic, _options.MaxRetainedMessages);
                return;
            }
            else
            {
                _retained.Set(message);
            }

            _metrics.SetRetained(_retained.Count);
        }

        if (persist)
        {
            await _retainedStore.SetAsync(message, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Retained messages whose topic matches <paramref name="filter"/> (§3.8.4, sent after SUBSCRIBE).</summary>
    public List<StoredMessage> GetRetained(string filter)
    {
        var now = _time.GetUtcNow();
        var result = new List<StoredMessage>();
        lock (_retainedLock)
        {
            _retained.Match(filter, result);
        }

        // MQTT 5.0 §3.3.2.3.3: a retained message past its expiry is no longer sent.
        result.RemoveAll(m => m.ExpiresAt is { } expires && expires <= now);
        return result;
    }

    private async ValueTask PublishWillAsync(StoredMessage will, string clientId, CancellationToken cancellationToken)
    {
        LogWill(clientId, will.Topic);
        await PublishAsync(will, clientId, persistRetained: true, cancellationToken).ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 5020, Level = LogLevel.Information, Message = "MQTT: queue of {ClientId} is full ({Limit}, Relay:Mqtt:MaxQueuedMessages); dropping the {Which} messages (counted in relay_mqtt_drops_total{{reason=\"queue_full\"}})")]
    private partial void LogQueueFull(string clientId, int limit, string which);

    [LoggerMessage(EventId = 5021, Level = LogLevel.Information, Message = "MQTT: retained message for {Topic} refused: {Limit} retained messages already (Relay:Mqtt:MaxRetainedMessages)")]
    private partial void LogRetainedLimit(string topic, int limit);

    [LoggerMessage(EventId = 5022, Level = LogLevel.Debug, Message = "MQTT: publishing the will of {ClientId} to {Topic}")]
    private partial void LogWill(string clientId, string topic);
}
