using System.Net;
using Relay.Protocol.Mqtt;
using Relay.Server.Devices;
using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Push.Commands;

/// <summary>
/// The command plane's ear on the broker: turns what the broker reports (connections, subscriptions,
/// acknowledgements, results) into <see cref="CommandEvent"/>s for the <see cref="CommandLoop"/>. Called on
/// connections' read loops, so each method only checks a topic and queues; when the loop is too far
/// behind the event is dropped and counted (the sweep redelivers; a result is not acknowledged, so the
/// device sends it again).
/// </summary>
internal sealed partial class CommandMqttObserver(CommandLoop loop, PushMetrics metrics, TimeProvider time, ILogger<CommandMqttObserver> logger) : IMqttMessageObserver, IMqttClientObserver
{
    // Bounded, so a stopping or stalled command loop cannot hold a device's connection forever: past it the
    // result is not acknowledged (a late commit makes the resent result a duplicate, recorded once).
    private static readonly TimeSpan ResultCommitTimeout = TimeSpan.FromSeconds(10);

    private readonly LogThrottle _throttle = new(2, TimeSpan.FromSeconds(10), time);
    private readonly ILogger<CommandMqttObserver> _logger = logger;

    public void OnClientConnected(string clientId, byte protocolVersion, IPEndPoint? remoteEndPoint, DateTimeOffset at) =>
        Post(new DeviceConnected(new DevicePresence(clientId, true, at, remoteEndPoint, protocolVersion, at)));

    public void OnClientDisconnected(string clientId, DateTimeOffset at) =>
        Post(new DeviceDisconnected(new DevicePresence(clientId, false, at, null, 0, null)));

    public void OnSubscribed(string clientId, string filter)
    {
        if (MqttTopic.Matches(filter, CommandWire.CommandsTopic(clientId)))
        {
            Post(new DeliveryRequested(clientId));
        }
    }

    /// <summary>
    /// A result is acknowledged (true) only once what it changed is committed, or it needed no write (a
    /// duplicate, an unknown command). When it was not stored (the commit failed, the loop is full or did not
    /// answer in time) the broker does not acknowledge it (review M3), so the device sends it again; a crash
    /// can then only lose a result the device has not seen acknowledged.
    /// </summary>
    public ValueTask<bool> OnMessageReceived(string clientId, StoredMessage message)
    {
        if (!CommandWire.TryGetResultsDevice(message.Topic, out var device))
        {
            return ValueTask.FromResult(true);
        }

        var arrival = new ResultArrival(message.Payload);
        if (!Post(new ResultReceived(device, arrival)))
        {
            NotAcknowledged(ResultRefusal.Busy, device);
            return ValueTask.FromResult(false);
        }

        return WaitStoredAsync(device, arrival);
    }

    public void OnMessageDelivered(string clientId, string topic, object? tag)
    {
        if (tag is CommandEntry entry)
        {
            Post(new DeliveryAcknowledged(entry));
        }
    }

    private async ValueTask<bool> WaitStoredAsync(string device, ResultArrival arrival)
    {
        bool stored;
        try
        {
            stored = await arrival.Settled.WaitAsync(ResultCommitTimeout, time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            NotAcknowledged(ResultRefusal.Timeout, device);
            return false;
        }

        if (!stored)
        {
            // The loop logged why (the store's error) already.
            metrics.CountResultNotAcknowledged(ResultRefusal.NotStored);
        }

        return stored;
    }

    private void NotAcknowledged(ResultRefusal reason, string device)
    {
        metrics.CountResultNotAcknowledged(reason);
        if (_throttle.TryEnter(reason == ResultRefusal.Busy ? 0 : 1, out var suppressed))
        {
            LogNotAcknowledged(LogText.Safe(device), reason == ResultRefusal.Busy ? "the command loop's queue is full" : $"it was not committed within {ResultCommitTimeout.TotalSeconds:0} s", suppressed);
        }
    }

    private bool Post(CommandEvent e)
    {
        if (loop.TryPost(e))
        {
            return true;
        }

        // Counted so an operator sees the loop is overloaded.
        metrics.CountEventDropped();
        return false;
    }

    [LoggerMessage(EventId = 7008, Level = LogLevel.Warning, Message = "Push: a result from {Device} was not acknowledged because {Why}; the device sends it again ({Suppressed} more such results since the last line, all counted in relay_push_results_unacknowledged_total)")]
    private partial void LogNotAcknowledged(string device, string why, long suppressed);
}
