using System.Collections.Concurrent;
using System.Threading.Channels;

namespace Relay.Server.Mqtt;

/// <summary>
/// The MQTT server's shared state: sessions by client id, the subscription tree, retained messages, wills
/// and the timers that enforce keep-alive, CONNECT deadlines and session expiry. Connections
/// (<see cref="MqttConnection"/>) call in; the broker never blocks on a connection's socket.
/// Lock order: <c>_sessionsLock</c> → <see cref="MqttSession.Sync"/> → a connection's writer lock / the tree's lock.
/// </summary>
internal sealed partial class MqttBroker : BackgroundService
{
    private readonly MqttOptions _options;
    private readonly MqttMetrics _metrics;
    private readonly IMqttSessionStore _sessionStore;
    private readonly IMqttRetainedStore _retainedStore;
    private readonly TimeProvider _time;
    private readonly ILogger<MqttBroker> _logger;
    private readonly Lock _sessionsLock = new();
    private readonly Dictionary<string, MqttSession> _sessions = new(StringComparer.Ordinal);

    // Persistent sessions without a connection: the only ones the expiry sweep has to look at.
    private readonly HashSet<MqttSession> _offline = [];
    private readonly ConcurrentDictionary<MqttConnection, byte> _connections = new();

    // Store writes that sync paths (sending under a session lock) cannot await: "went out with packet id N"
    // and "dropped". Bounded; a full channel loses the write and counts it (the message is then resent
    // without DUP, or once more, after a crash: QoS 1 semantics, never loss).
    private readonly Channel<StoreOp> _storeOps = Channel.CreateBounded<StoreOp>(new BoundedChannelOptions(65536) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });
    private readonly DateTimeOffset _startedAt;
    private long _storeOpsLost;

    // Observers are resolved at start, not injected: they usually need the broker themselves.
    private readonly IServiceProvider? _services;

    public MqttBroker(MqttOptions options, MqttMetrics metrics, IMqttSessionStore sessionStore, IMqttRetainedStore retainedStore, IMqttAuthenticator authenticator, IMqttAuthorizer authorizer, TimeProvider time, IHostApplicationLifetime lifetime, ILogger<MqttBroker> logger, IServiceProvider? services = null)
    {
        // One callback for every connection instead of a registration each: idle connections stay small.
        lifetime.ApplicationStopping.Register(EndAllConnections);
        Authenticator = authenticator;
        Authorizer = authorizer;
        _options = options;
        _metrics = metrics;
        _sessionStore = sessionStore;
        _retainedStore = retainedStore;
        _time = time;
        _logger = logger;
        _startedAt = time.GetUtcNow();
        _services = services;
        Tree = new MqttSubscriptionTree();
        TopicLimits = new MqttTopicLimits(options, metrics, logger, time);
        DropOldest = options.QueueDropPolicy == MqttQueueDropPolicy.DropOldest;
    }

    public MqttOptions Options => _options;

    public IMqttAuthenticator Authenticator { get; }

    public IMqttAuthorizer Authorizer { get; }

    public MqttMetrics Metrics => _metrics;

    public MqttSubscriptionTree Tree { get; }

    public MqttTopicLimits TopicLimits { get; }

    public TimeProvider Time => _time;

    public IMqttSessionStore SessionStore => _sessionStore;

    public bool DropOldest { get; }

    public long StoreOpsLost => Volatile.Read(ref _storeOpsLost);

    public int SessionCount
    {
        get
        {
            lock (_sessionsLock)
            {
                return _sessions.Count;
            }
        }
    }

    private void EndAllConnections()
    {
        foreach (var (connection, _) in _connections)
        {
            _ = connection.RequestEnd(MqttEndReason.Shutdown, Relay.Protocol.Mqtt.MqttReasonCode.ServerShuttingDown);
        }
    }

    public void Register(MqttConnection connection) => _connections.TryAdd(connection, 0);

    public void Unregister(MqttConnection connection) => _connections.TryRemove(connection, out _);

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_services is not null)
        {
            SetObservers(_services.GetServices<IMqttMessageObserver>(), _services.GetServices<IMqttClientObserver>());
        }

        // Restore before any listener accepts a client, so a reconnecting device finds its session.
        await RestoreAsync(cancellationToken).ConfigureAwait(false);
        await base.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var writer = WriteStoreOpsAsync();
        await SweepAsync(stoppingToken).ConfigureAwait(false);
        _storeOps.Writer.TryComplete();
        await writer.ConfigureAwait(false);
    }

    /// <summary>Queues a store write from a path that holds a lock.</summary>
    public void QueueStoreOp(in StoreOp op)
    {
        if (!_storeOps.Writer.TryWrite(op))
        {
            Interlocked.Increment(ref _storeOpsLost);
            LogStoreOpLost(op.ClientId, op.Sequence);
        }
    }

    // Runs until the channel is completed at stop, then drains what is left: these writes are what keeps
    // a restart from resending acknowledged messages, so shutdown does not cancel them.
    private async Task WriteStoreOpsAsync()
    {
        await foreach (var op in _storeOps.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
        {
            try
            {
                if (op.Remove)
                {
                    await _sessionStore.RemoveMessageAsync(op.ClientId, op.Sequence, CancellationToken.None).ConfigureAwait(false);
                }
                else
                {
                    await _sessionStore.MarkSentAsync(op.ClientId, op.Sequence, op.PacketId, op.Released, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogStoreFailed(e, op.ClientId);
            }
        }
    }

    private async Task RestoreAsync(CancellationToken cancellationToken)
    {
        var retained = await _retainedStore.LoadAllAsync(cancellationToken).ConfigureAwait(false);
        List<StoredMessage>? overLimit = null;
        lock (_retainedLock)
        {
            foreach (var message in retained)
            {
                // A row stored before the topic limits existed (or under looser ones) must not reach the
                // tree: one deep topic restored is a crash on the first wildcard SUBSCRIBE (review C1).
                if (TopicLimits.Check(message.Topic) is { } limit)
                {
                    TopicLimits.Refused(limit, "restore of a retained message", null, message.Topic);
                    (overLimit ??= []).Add(message);
                    continue;
                }

                _retained.Set(message);
            }

            _metrics.SetRetained(_retained.Count);
        }

        if (overLimit is not null)
        {
            LogRestoreSkipped(overLimit.Count, "retained message(s)");
            foreach (var message in overLimit)
            {
                // An empty payload deletes the row [MQTT-3.3.1-6], so the next start does not meet it again.
                await _retainedStore.SetAsync(message with { Payload = ReadOnlyMemory<byte>.Empty }, cancellationToken).ConfigureAwait(false);
            }
        }

        var sessions = await _sessionStore.LoadAllAsync(cancellationToken).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        foreach (var persisted in sessions)
        {
            var state = new MqttSession(persisted.ClientId)
            {
                Owner = persisted.Owner,
                ExpirySeconds = persisted.ExpiryIntervalSeconds,

                // A session that was online when the process died starts its expiry now.
                DisconnectedAt = persisted.DisconnectedAt ?? now,
            };
            foreach (var subscription in persisted.Subscriptions)
            {
                if (TopicLimits.Check(subscription.TopicFilter) is { } limit)
                {
                    TopicLimits.Refused(limit, "restore of a subscription", persisted.ClientId, subscription.TopicFilter);
                    LogRestoreSkipped(1, "subscription(s)");
                    await _sessionStore.RemoveSubscriptionAsync(persisted.ClientId, subscription.TopicFilter, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                AddSubscription(state, subscription);
            }

            foreach (var message in persisted.Messages)
            {
                var outgoing = new MqttOutgoing(message.Message, message.Message.QoS, message.Message.Retain, null)
                {
                    Sequence = message.Sequence,
                    PacketId = message.PacketId,
                    Released = message.Released,
                    Sent = message.PacketId != 0,
                };
                if (outgoing.Sent)
                {
                    (state.Inflight ??= []).Add(outgoing);
                }
                else
                {
                    (state.Queue ??= new()).Enqueue(outgoing);
                }
            }

            lock (_sessionsLock)
            {
                _sessions[state.ClientId] = state;
                _offline.Add(state);
            }

            _metrics.Session(+1, persistent: true);
        }

        if (sessions.Count > 0 || retained.Count > 0)
        {
            LogRestored(sessions.Count, retained.Count);
        }
    }

    /// <summary>Creates the subscription object and puts it in the tree; the caller persists it.</summary>
    public MqttSubscription AddSubscription(MqttSession state, PersistedSubscription persisted)
    {
        string inner = persisted.TopicFilter;
        string? group = null;
        if (Relay.Protocol.Mqtt.MqttTopic.TryParseShared(persisted.TopicFilter, out var groupSpan, out var innerSpan))
        {
            group = groupSpan.ToString();
            inner = innerSpan.ToString();
        }

        var subscription = new MqttSubscription(state, persisted.TopicFilter, inner, group)
        {
            MaximumQoS = persisted.MaximumQoS,
            NoLocal = persisted.NoLocal,
            RetainAsPublished = persisted.RetainAsPublished,
            RetainHandling = persisted.RetainHandling,
            SubscriptionIdentifier = persisted.SubscriptionIdentifier,
        };
        lock (state.Sync)
        {
            state.Subscriptions ??= new(StringComparer.Ordinal);
            if (state.Subscriptions.Remove(persisted.TopicFilter, out var previous))
            {
                Tree.Remove(previous);
                _metrics.Subscriptions(-1);
            }

            state.Subscriptions[persisted.TopicFilter] = subscription;
            Tree.Add(subscription);
            _metrics.Subscriptions(+1);
        }

        return subscription;
    }

    /// <summary>Removes a subscription; false when the session had none with that filter.</summary>
    public bool RemoveSubscription(MqttSession state, string filter)
    {
        lock (state.Sync)
        {
            if (state.Subscriptions is null || !state.Subscriptions.Remove(filter, out var subscription))
            {
                return false;
            }

            Tree.Remove(subscription);
            _metrics.Subscriptions(-1);
            return true;
        }
    }

    [LoggerMessage(EventId = 5001, Level = LogLevel.Information, Message = "MQTT: restored {Sessions} persistent session(s) and {Retained} retained message(s)")]
    private partial void LogRestored(int sessions, int retained);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Warning, Message = "MQTT: skipped and deleted {Count} stored {What} whose topic breaks Relay:Mqtt:MaxTopicLevels or MaxTopicLength")]
    private partial void LogRestoreSkipped(int count, string what);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Warning, Message = "MQTT: store write for {ClientId} (sequence {Sequence}) dropped: the store is too far behind")]
    private partial void LogStoreOpLost(string clientId, long sequence);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Error, Message = "MQTT: session store write for {ClientId} failed")]
    private partial void LogStoreFailed(Exception exception, string clientId);
}

/// <summary>A deferred session-store write: mark sent (packet id, released) or remove.</summary>
internal readonly record struct StoreOp(string ClientId, long Sequence, ushort PacketId, bool Released, bool Remove);
