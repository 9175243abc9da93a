using System.Net;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Twins;

/// <summary>
/// The state plane's ear on the broker: a device's report on <c>devices/{id}/twin/reported</c> is merged and
/// committed before the broker acknowledges it, and a device that connects or subscribes to its delta topic is
/// sent the delta it is due.
/// </summary>
internal sealed partial class TwinMqttObserver(
    TwinService twins, TwinMetrics metrics, IMqttDeviceChannel devices, TimeProvider time, ILogger<TwinMqttObserver> logger)
    : IMqttMessageObserver, IMqttClientObserver
{
    // Bounded, so a stalled writer cannot hold a device's read loop forever: past it the report is not
    // acknowledged and the device sends it again.
    private static readonly TimeSpan CommitTimeout = TimeSpan.FromSeconds(10);

    private readonly LogThrottle _throttle = new(3, TimeSpan.FromSeconds(10), time);
    private readonly ILogger<TwinMqttObserver> _logger = logger;

    public void OnClientConnected(string clientId, byte protocolVersion, IPEndPoint? remoteEndPoint, DateTimeOffset at)
    {
        // A persistent session comes back subscribed; a clean one gets its delta when it subscribes.
        if (devices.IsDeviceSession(clientId))
        {
            twins.RequestDelta(clientId);
        }
    }

    public void OnClientDisconnected(string clientId, DateTimeOffset at)
    {
    }

    public void OnSubscribed(string clientId, string filter)
    {
        if (MqttTopic.Matches(filter, TwinService.DeltaTopic(clientId)) && devices.IsDeviceSession(clientId))
        {
            twins.RequestDelta(clientId);
        }
    }

    /// <summary>
    /// A report is acknowledged once committed. One that can never apply (not the device's own session, not a
    /// JSON object, over a limit) is acknowledged too, dropped, counted and logged: refusing it would only make
    /// the device send it again forever. One that could not be committed now (busy, a store error, too slow) is
    /// not acknowledged, so the device sends it again.
    /// </summary>
    public ValueTask<bool> OnMessageReceived(string clientId, StoredMessage message)
    {
        if (!TwinService.TryGetReportingDevice(message.Topic, out var device))
        {
            return ValueTask.FromResult(true);
        }

        // Only the device itself reports its state: not another principal with a grant on its topics.
        if (!string.Equals(device, clientId, StringComparison.Ordinal) || !devices.IsDeviceSession(clientId))
        {
            Drop(TwinReportDrop.NotOwner, clientId, $"it is not the session of device {LogText.Safe(device)}");
            return ValueTask.FromResult(true);
        }

        return ReportAsync(device, message);
    }

    private async ValueTask<bool> ReportAsync(string device, StoredMessage message)
    {
        TwinUpdate update;
        try
        {
            using var timeout = new CancellationTokenSource(CommitTimeout, time);
            update = await twins.ReportAsync(device, message.Payload, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            NotAcknowledged(device, $"it was not committed within {CommitTimeout.TotalSeconds:0} s", null);
            return false;
        }
        catch (Exception e) when (e is Microsoft.Data.Sqlite.SqliteException or InvalidDataException)
        {
            NotAcknowledged(device, "storing it failed", e);
            return false;
        }

        switch (update.Status)
        {
            case TwinUpdateStatus.Applied:
                return true;
            case TwinUpdateStatus.Invalid:
                Drop(TwinReportDrop.Invalid, device, update.Problem!);
                return true;
            case TwinUpdateStatus.LimitHit:
                Drop(TwinReportDrop.Limit, device, update.Problem!);
                return true;
            default:
                NotAcknowledged(device, update.Problem ?? "the writer is busy", null);
                return false;
        }
    }

    private void Drop(TwinReportDrop reason, string clientId, string why)
    {
        metrics.CountDrop(reason);
        if (_throttle.TryEnter(0, out var suppressed))
        {
            LogDropped(LogText.Safe(clientId), LogText.Safe(why), suppressed);
        }
    }

    private void NotAcknowledged(string device, string why, Exception? exception)
    {
        if (_throttle.TryEnter(exception is null ? 1 : 2, out var suppressed))
        {
            LogNotAcknowledged(exception, LogText.Safe(device), LogText.Safe(why), suppressed);
        }
    }

    [LoggerMessage(
        EventId = 9111,
        Level = LogLevel.Warning,
        Message = "Twins: a state report from {Client} was dropped because {Why} (counted in relay_twin_reports_dropped_total); "
            + "{Suppressed} more since the last line")]
    private partial void LogDropped(string client, string why, long suppressed);

    [LoggerMessage(
        EventId = 9112,
        Level = LogLevel.Warning,
        Message = "Twins: a state report from {Device} was not acknowledged because {Why}; the device sends it again; {Suppressed} more since the last line")]
    private partial void LogNotAcknowledged(Exception? exception, string device, string why, long suppressed);
}
