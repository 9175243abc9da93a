namespace Relay.Server.Mqtt;

/// <summary>
/// What every <see cref="MqttConnection"/> works with: configuration, the identity seams, and the owners of
/// the broker's state (sessions, routing, observers, presence, the live connections), each behind its own
/// lock. Holds no state of its own; one instance, so a connection carries a single reference to all of them.
/// </summary>
internal sealed class MqttConnectionServices
{
    public MqttConnectionServices(
        MqttOptions options,
        MqttMetrics metrics,
        TimeProvider time,
        IMqttAuthenticator authenticator,
        IMqttAuthorizer authorizer,
        MqttTopicLimits topicLimits,
        MqttSessionRegistry sessions,
        MqttRouter router,
        MqttObservers observers,
        MqttDevices devices,
        MqttConnections connections,
        MqttClientLog clientLog)
    {
        Options = options;
        Metrics = metrics;
        Time = time;
        Authenticator = authenticator;
        Authorizer = authorizer;
        TopicLimits = topicLimits;
        Sessions = sessions;
        Router = router;
        Observers = observers;
        Devices = devices;
        Connections = connections;
        ClientLog = clientLog;
    }

    public MqttOptions Options { get; }

    public MqttMetrics Metrics { get; }

    public TimeProvider Time { get; }

    public IMqttAuthenticator Authenticator { get; }

    public IMqttAuthorizer Authorizer { get; }

    public MqttTopicLimits TopicLimits { get; }

    public MqttSessionRegistry Sessions { get; }

    public MqttRouter Router { get; }

    public MqttObservers Observers { get; }

    /// <summary>Presence: told when a client's connection ends, for "last seen".</summary>
    public MqttDevices Devices { get; }

    public MqttConnections Connections { get; }

    /// <summary>The throttled log of what clients can cause (review M6).</summary>
    public MqttClientLog ClientLog { get; }
}
