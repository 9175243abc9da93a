using System.Globalization;
using System.Text;

namespace Relay.Server.Mqtt;

/// <summary>
/// The broker's timers, on one sweep every 250 ms: each connection's CONNECT deadline and keep-alive, the
/// expiry of offline sessions with their delayed wills, and the <c>$SYS</c> topics every
/// Relay:Mqtt:SysIntervalSeconds. One sweep instead of a timer per connection, so an idle connection carries
/// two longs rather than a timer and its closure.
/// </summary>
internal sealed partial class MqttHousekeeping
{
    private static readonly TimeSpan SweepInterval = TimeSpan.FromMilliseconds(250);

    private readonly int _sysIntervalSeconds;
    private readonly MqttMetrics _metrics;
    private readonly MqttConnections _connections;
    private readonly MqttSessionRegistry _sessions;
    private readonly MqttRouter _router;
    private readonly TimeProvider _time;
    private readonly DateTimeOffset _startedAt;
    private readonly ILogger _logger;

    public MqttHousekeeping(MqttOptions options, MqttMetrics metrics, MqttConnections connections, MqttSessionRegistry sessions, MqttRouter router, TimeProvider time, ILogger<MqttHousekeeping> logger)
    {
        _sysIntervalSeconds = options.SysIntervalSeconds;
        _metrics = metrics;
        _connections = connections;
        _sessions = sessions;
        _router = router;
        _time = time;
        _startedAt = time.GetUtcNow();
        _logger = logger;
    }

    /// <summary>Sweeps until <paramref name="stoppingToken"/> is cancelled. A failed sweep is logged and the next one runs.</summary>
    public async Task RunAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(SweepInterval, _time);
        var nextSys = _sysIntervalSeconds > 0 ? _time.GetUtcNow() : DateTimeOffset.MaxValue;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                _connections.CheckDeadlines(Environment.TickCount64);
                try
                {
                    await _sessions.ExpireAsync(stoppingToken).ConfigureAwait(false);
                    if (_time.GetUtcNow() >= nextSys)
                    {
                        nextSys = _time.GetUtcNow().AddSeconds(_sysIntervalSeconds);
                        await PublishSysAsync(stoppingToken).ConfigureAwait(false);
                    }
                }
                catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
                {
                    LogSweepFailed(e);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>Mosquitto's <c>$SYS/broker/...</c> names, retained, so a new subscriber sees them at once.</summary>
    private async ValueTask PublishSysAsync(CancellationToken cancellationToken)
    {
        var uptime = (long)(_time.GetUtcNow() - _startedAt).TotalSeconds;
        var sessions = _sessions.Count;
        (string Topic, string Value)[] values =
        [
            ("$SYS/broker/version", "relay " + (typeof(MqttHousekeeping).Assembly.GetName().Version?.ToString() ?? "0")),
            ("$SYS/broker/uptime", uptime.ToString(CultureInfo.InvariantCulture) + " seconds"),
            ("$SYS/broker/clients/connected", _metrics.ClientsConnected.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/clients/total", sessions.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/clients/disconnected", Math.Max(0, sessions - _metrics.ClientsConnected).ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/messages/received", _metrics.MessagesInTotal.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/messages/sent", _metrics.MessagesOutTotal.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/publish/messages/received", _metrics.MessagesInTotal.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/publish/messages/sent", _metrics.MessagesOutTotal.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/load/bytes/received", _metrics.BytesIn.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/load/bytes/sent", _metrics.BytesOut.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/retained messages/count", _metrics.RetainedCount.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/subscriptions/count", _metrics.SubscriptionCount.ToString(CultureInfo.InvariantCulture)),
        ];
        foreach (var (topic, value) in values)
        {
            var message = new StoredMessage(topic, Encoding.UTF8.GetBytes(value), 0, true, null, null);
            await _router.PublishAsync(message, publisherClientId: null, persistRetained: false, cancellationToken).ConfigureAwait(false);
        }
    }

    [LoggerMessage(EventId = 5030, Level = LogLevel.Error, Message = "MQTT: housekeeping sweep failed")]
    private partial void LogSweepFailed(Exception exception);
}
