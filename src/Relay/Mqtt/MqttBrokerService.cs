namespace Relay.Server.Mqtt;

/// <summary>
/// The broker's life as a hosted service (started by <see cref="MqttStartup"/>). At start: the observers are
/// installed, then retained messages and persistent sessions restored, before any listener accepts a client.
/// While running: the deferred store writer and the housekeeping sweep. At shutdown: every connection is told
/// to end as the host begins stopping, the sweep stops, and the store writes still queued are written.
/// <para>
/// The broker is not one object; each part owns its state and its lock, and none takes another's:
/// <see cref="MqttSessionRegistry"/> (sessions by client id, the offline set), <see cref="MqttSession"/> (one
/// session: subscriptions, queue, in-flight window, wills), <see cref="MqttRouter"/> (routing; holds no state),
/// <see cref="MqttSubscriptionTree"/> (the index routing matches against), <see cref="MqttRetainedMessages"/>,
/// <see cref="MqttStoreWriter"/>, <see cref="MqttHousekeeping"/> (timers), <see cref="MqttConnections"/> (live
/// connections, per-IP counts), <see cref="MqttObservers"/> and <see cref="MqttDevices"/> (presence and the
/// device channel). Where one calls another under its lock, the order is always registry, then session, then
/// a connection's send side or the subscription index.
/// </para>
/// </summary>
internal sealed partial class MqttBrokerService : BackgroundService
{
    private readonly MqttObservers _observers;
    private readonly MqttRetainedMessages _retained;
    private readonly MqttSessionRegistry _sessions;
    private readonly MqttStoreWriter _storeWriter;
    private readonly MqttHousekeeping _housekeeping;
    private readonly IServiceProvider _services;
    private readonly ILogger _logger;

    public MqttBrokerService(MqttObservers observers, MqttRetainedMessages retained, MqttSessionRegistry sessions, MqttStoreWriter storeWriter, MqttHousekeeping housekeeping, MqttConnections connections, IHostApplicationLifetime lifetime, IServiceProvider services, ILogger<MqttBrokerService> logger)
    {
        // One callback for every connection instead of a registration each: idle connections stay small.
        lifetime.ApplicationStopping.Register(connections.EndAll);
        _observers = observers;
        _retained = retained;
        _sessions = sessions;
        _storeWriter = storeWriter;
        _housekeeping = housekeeping;
        _services = services;
        _logger = logger;
    }

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        // Resolved here rather than injected: observers (push, rendezvous) need the broker's device channel.
        _observers.Install(_services.GetServices<IMqttMessageObserver>(), _services.GetServices<IMqttClientObserver>());

        // Restore before any listener accepts a client, so a reconnecting device finds its session.
        var retained = await _retained.RestoreAsync(cancellationToken).ConfigureAwait(false);
        var sessions = await _sessions.RestoreAsync(cancellationToken).ConfigureAwait(false);
        if (sessions > 0 || retained > 0)
        {
            LogRestored(sessions, retained);
        }

        await base.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var writer = _storeWriter.RunAsync();
        await _housekeeping.RunAsync(stoppingToken).ConfigureAwait(false);
        _storeWriter.Complete();
        await writer.ConfigureAwait(false);
    }

    [LoggerMessage(EventId = 5001, Level = LogLevel.Information, Message = "MQTT: restored {Sessions} persistent session(s) and {Retained} retained message(s)")]
    private partial void LogRestored(int sessions, int retained);
}
