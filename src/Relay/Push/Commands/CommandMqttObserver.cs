using System.Net;
using Relay.Protocol.Mqtt;
using Relay.Server.Devices;
using Relay.Server.Mqtt;

namespace Relay.Server.Push.Commands;

/// <summary>
/// The command plane's ear on the broker: turns what the broker reports (connections, subscriptions,
/// acknowledgements, results) into <see cref="CommandEvent"/>s for the <see cref="CommandLoop"/>. Called on
/// connections' read loops, so each method only checks a topic and queues; when the loop is too far
/// behind the event is dropped and counted (the sweep redelivers, a device resends an unanswered result).
/// </summary>
internal sealed class CommandMqttObserver(CommandLoop loop, PushMetrics metrics, TimeProvider time) : IMqttMessageObserver, IMqttClientObserver
{
    // Bounded, so a stopping or stalled command loop cannot hold a device's connection forever: past it the
    // PUBACK goes anyway and the result may be lost.
    private static readonly TimeSpan ResultCommitTimeout = TimeSpan.FromSeconds(10);

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

    public ValueTask OnMessageReceived(string clientId, StoredMessage message)
    {
        if (!CommandWire.TryGetResultsDevice(message.Topic, out var device))
        {
            return ValueTask.CompletedTask;
        }

        // The device's PUBACK waits until the result is committed (or found to need no write), so a crash
        // can only lose a result the device has not seen acknowledged, which it then sends again.
        var arrival = new ResultArrival(message.Payload);
        return Post(new ResultReceived(device, arrival)) ? new ValueTask(WaitSettledAsync(arrival)) : ValueTask.CompletedTask;
    }

    public void OnMessageDelivered(string clientId, string topic, object? tag)
    {
        if (tag is CommandEntry entry)
        {
            Post(new DeliveryAcknowledged(entry));
        }
    }

    private async Task WaitSettledAsync(ResultArrival arrival)
    {
        try
        {
            // Acknowledged whether or not the commit succeeded (Settled false): a result whose commit
            // failed is then lost unless the device sends it again of its own accord.
            await arrival.Settled.WaitAsync(ResultCommitTimeout, time).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
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
}
