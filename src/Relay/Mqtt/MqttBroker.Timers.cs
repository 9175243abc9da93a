using System.Globalization;
using System.Text;

namespace Relay.Server.Mqtt;

internal sealed partial class MqttBroker
{
    // Deadlines (CONNECT timeout, 1.5x keep-alive) are checked by one sweep instead of a timer per
    // connection, so an idle connection carries two longs rather than a timer and its closure.
    private static readonly TimeSpan SweepInterval = TimeSpan.FromMilliseconds(250);

    private async Task SweepAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(SweepInterval, _time);
        var nextSys = _options.SysIntervalSeconds > 0 ? _time.GetUtcNow() : DateTimeOffset.MaxValue;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                var now = Environment.TickCount64;
                foreach (var (connection, _) in _connections)
                {
                    connection.CheckDeadlines(now);
                }

                try
                {
                    await ExpireSessionsAsync(stoppingToken).ConfigureAwait(false);
                    if (_time.GetUtcNow() >= nextSys)
                    {
                        nextSys = _time.GetUtcNow().AddSeconds(_options.SysIntervalSeconds);
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
        (string Topic, string Value)[] values =
        [
            ("$SYS/broker/version", "relay " + (typeof(MqttBroker).Assembly.GetName().Version?.ToString() ?? "0")),
            ("$SYS/broker/uptime", uptime.ToString(CultureInfo.InvariantCulture) + " seconds"),
            ("$SYS/broker/clients/connected", _metrics.ClientsConnected.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/clients/total", SessionCount.ToString(CultureInfo.InvariantCulture)),
            ("$SYS/broker/clients/disconnected", Math.Max(0, SessionCount - _metrics.ClientsConnected).ToString(CultureInfo.InvariantCulture)),
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
            await PublishAsync(message, publisherClientId: null, persistRetained: false, cancellationToken).ConfigureAwait(false);
        }
    }

    [LoggerMessage(EventId = 5030, Level = LogLevel.Error, Message = "MQTT: housekeeping sweep failed")]
    private partial void LogSweepFailed(Exception exception);
}
