namespace Relay.Server.Mqtt;

/// <summary>
/// What every <see cref="MqttSession"/> shares: the queue limit and drop policy, the subscription index it keeps
/// in step with its own subscriptions, the deferred store writer, metrics, the clock and the log. Immutable;
/// one per broker, so a session carries a single reference to it.
/// </summary>
internal sealed class MqttSessionContext
{
    public MqttSessionContext(MqttOptions options, MqttMetrics metrics, MqttSubscriptionTree subscriptions, MqttStoreWriter storeWriter, TimeProvider time, ILogger<MqttSession> logger)
    {
        MaxQueuedMessages = options.MaxQueuedMessages;
        DropOldest = options.QueueDropPolicy == MqttQueueDropPolicy.DropOldest;
        Metrics = metrics;
        Subscriptions = subscriptions;
        StoreWriter = storeWriter;
        Time = time;
        Logger = logger;
    }

    /// <summary>Relay:Mqtt:MaxQueuedMessages: QoS 1/2 messages a session queues behind its send window.</summary>
    public int MaxQueuedMessages { get; }

    /// <summary>Relay:Mqtt:QueueDropPolicy: a full queue drops its oldest message (true) or the new one.</summary>
    public bool DropOldest { get; }

    public MqttMetrics Metrics { get; }

    /// <summary>The index PUBLISH routing matches against; sessions add and remove their subscriptions in it.</summary>
    public MqttSubscriptionTree Subscriptions { get; }

    public MqttStoreWriter StoreWriter { get; }

    public TimeProvider Time { get; }

    public ILogger Logger { get; }
}
