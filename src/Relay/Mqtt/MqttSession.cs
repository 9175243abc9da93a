namespace Relay.Server.Mqtt;

/// <summary>
/// The server side of an MQTT session (§4.1): its owner, expiry and pending will, its subscriptions, the
/// messages queued and in flight to its client, and the QoS 2 packet ids received but not yet released. It
/// outlives its connections when it is persistent. Every field is guarded by a lock only this class takes;
/// under it the session calls only what takes no lock but its own (its connection's send side, the
/// subscription index, the store writer). The registry calls in holding its own lock, which comes first.
/// Collections are created on first use, so an idle session holds little beyond this object. This file: its
/// owner and life (attach, detach, expiry) and its subscriptions; the delivery pump is in <c>.Delivery.cs</c>.
/// </summary>
internal sealed partial class MqttSession
{
    private readonly Lock _sync = new();
    private readonly MqttSessionContext _context;

    // Owner of the principal that created the session (MqttIdentity.Owner): only a connection of the same
    // owner may resume or take it over. Null only for a session restored from before owners were stored:
    // the next principal to attach claims it.
    private string? _owner;

    // Seconds the session outlives its connection; 0 = ends with it. Written under the lock, read without it
    // by Persistent, where a stale answer is harmless.
    private uint _expirySeconds;
    private DateTimeOffset? _disconnectedAt;
    private IMqttSessionConnection? _connection;

    // Set once the session ended (expired, or not persistent and its connection gone): late deliveries must
    // not resurrect it.
    private bool _ended;
    private MqttSessionSubscriptions? _subscriptions;
    private MqttPendingWill? _pendingWill;

    public MqttSession(string clientId, MqttSessionContext context)
    {
        ClientId = clientId;
        _context = context;
    }

    public string ClientId { get; }

    /// <summary>Who owns the session (<see cref="MqttIdentity.Owner"/>); null for a session restored from before owners were stored.</summary>
    public string? Owner
    {
        get
        {
            lock (_sync)
            {
                return _owner;
            }
        }
    }

    /// <summary>Seconds the session outlives its connection; 0 = ends with it.</summary>
    public uint ExpirySeconds => Volatile.Read(ref _expirySeconds);

    public bool Persistent => ExpirySeconds > 0;

    /// <summary>When the last connection ended; null while online (or never offline).</summary>
    public DateTimeOffset? DisconnectedAt
    {
        get
        {
            lock (_sync)
            {
                return _disconnectedAt;
            }
        }
    }

    /// <summary>The live connection, or null while offline.</summary>
    public IMqttSessionConnection? Connection
    {
        get
        {
            lock (_sync)
            {
                return _connection;
            }
        }
    }

    /// <summary>Whether a connection is attached; read without the lock (shared-subscription picks, presence).</summary>
    public bool IsOnline => Volatile.Read(ref _connection) is not null;

    /// <summary>
    /// Binds <paramref name="connection"/> to the session (MQTT 5.0 §3.1.2.4, §4.1) unless it belongs to another
    /// owner (then nothing changes and the result is false). <paramref name="previous"/> is the connection it
    /// replaces, which the caller takes over [MQTT-3.1.4-3]; <paramref name="clear"/> discards what the session
    /// held (clean start [MQTT-3.1.2-4]). Nothing is sent to the new connection before <see cref="Resume"/>.
    /// </summary>
    public bool TryAttach(IMqttSessionConnection connection, string owner, bool clear, uint expirySeconds, out IMqttSessionConnection? previous, out bool wasPersistent)
    {
        lock (_sync)
        {
            if (_owner is { } current && !string.Equals(current, owner, StringComparison.Ordinal))
            {
                previous = null;
                wasPersistent = false;
                return false;
            }

            _owner = owner;
            previous = _connection;
            Volatile.Write(ref _connection, connection);
            _resumed = false;

            // MQTT 5.0 §3.1.3.2.2: a reconnect within the Will Delay Interval cancels the will.
            _pendingWill = null;
            wasPersistent = _expirySeconds > 0;
            if (clear)
            {
                ClearLocked();
            }

            Volatile.Write(ref _expirySeconds, expirySeconds);
            _disconnectedAt = null;
            return true;
        }
    }

    /// <summary>
    /// Unbinds <paramref name="connection"/>; <see cref="MqttDetach.NotAttached"/> when the session had already
    /// moved to another connection (takeover). A session that is not persistent ends with its connection
    /// [MQTT-3.1.2-5 / MQTT-4.1.0-1]; a persistent one goes offline, keeping <paramref name="will"/> for
    /// min(will delay, session expiry) (§3.1.3.2.2). <paramref name="publishWillNow"/>: the will is due now.
    /// </summary>
    public MqttDetach Detach(IMqttSessionConnection connection, StoredMessage? will, uint willDelaySeconds, DateTimeOffset now, out bool publishWillNow)
    {
        publishWillNow = false;
        lock (_sync)
        {
            if (_connection != connection)
            {
                return MqttDetach.NotAttached;
            }

            Volatile.Write(ref _connection, null);
            _resumed = false;
            if (_expirySeconds == 0)
            {
                _ended = true;
                ClearLocked();
                publishWillNow = will is not null;
                return MqttDetach.Ended;
            }

            _disconnectedAt = now;
            _outbox?.DropTagged();
            if (will is not null)
            {
                var delay = Math.Min(willDelaySeconds, _expirySeconds);
                if (delay == 0)
                {
                    publishWillNow = true;
                }
                else
                {
                    _pendingWill = new MqttPendingWill(will, now.AddSeconds(delay));
                }
            }

            return MqttDetach.Offline;
        }
    }

    /// <summary>Sets the expiry a v5 DISCONNECT asked for (§3.14.2.2.2); returns whether the session was persistent before.</summary>
    public bool SetExpiry(uint expirySeconds)
    {
        lock (_sync)
        {
            var wasPersistent = _expirySeconds > 0;
            Volatile.Write(ref _expirySeconds, expirySeconds);
            return wasPersistent;
        }
    }

    /// <summary>
    /// For the sweep over offline sessions: takes the pending will once its delay has passed
    /// (<paramref name="dueWill"/>) and says whether the session is past its expiry.
    /// </summary>
    public bool CheckExpiry(DateTimeOffset now, out StoredMessage? dueWill)
    {
        dueWill = null;
        lock (_sync)
        {
            if (_connection is not null || _disconnectedAt is not { } since)
            {
                return false;
            }

            if (_pendingWill is { } will && will.DueAt <= now)
            {
                dueWill = will.Message;
                _pendingWill = null;
            }

            return _expirySeconds != uint.MaxValue && since.AddSeconds(_expirySeconds) <= now;
        }
    }

    /// <summary>Ends an expired session. Returns a will still waiting for its delay: it goes now, with the session (§3.1.3.2.2).</summary>
    public StoredMessage? End()
    {
        lock (_sync)
        {
            _ended = true;
            var will = _pendingWill?.Message;
            _pendingWill = null;
            ClearLocked();
            return will;
        }
    }

    /// <summary>
    /// Sets what the store kept of a persistent session, at start, before the session is shared: messages go
    /// back in flight when they had been sent, else to the queue (subscriptions come through <see cref="TrySubscribe"/>).
    /// </summary>
    public void Restore(string? owner, uint expirySeconds, DateTimeOffset disconnectedAt, IEnumerable<MqttOutgoing> messages)
    {
        lock (_sync)
        {
            _owner = owner;
            Volatile.Write(ref _expirySeconds, expirySeconds);
            _disconnectedAt = disconnectedAt;
            foreach (var outgoing in messages)
            {
                if (outgoing.Sent)
                {
                    Outbox.AddInflight(outgoing);
                }
                else
                {
                    Outbox.Enqueue(outgoing);
                }
            }
        }
    }

    /// <summary>
    /// Adds or replaces (same filter) a subscription, and mirrors it in the subscription index under the
    /// session's lock, so the two never disagree. False when a new filter would go past
    /// <paramref name="maxSubscriptions"/>; <paramref name="existed"/>: the filter was already subscribed.
    /// </summary>
    public bool TrySubscribe(MqttSubscription subscription, int maxSubscriptions, out bool existed)
    {
        lock (_sync)
        {
            return (_subscriptions ??= []).TryPut(subscription, maxSubscriptions, _context.Subscriptions, _context.Metrics, out existed);
        }
    }

    /// <summary>Removes a subscription; false when the session had none with that filter.</summary>
    public bool Unsubscribe(string filter)
    {
        lock (_sync)
        {
            return _subscriptions is not null && _subscriptions.TryDrop(filter, _context.Subscriptions, _context.Metrics);
        }
    }

    /// <summary>The session's subscriptions now (a copy).</summary>
    public MqttSubscription[] SnapshotSubscriptions()
    {
        lock (_sync)
        {
            return _subscriptions is null ? [] : [.. _subscriptions.Values];
        }
    }

    /// <summary>Drops everything the session holds; the caller holds the lock.</summary>
    private void ClearLocked()
    {
        _subscriptions?.DropAll(_context.Subscriptions, _context.Metrics);
        _subscriptions = null;

        _outbox = null;
        _inboundQoS2 = null;
    }
}
