using System.Net;
using Relay.Protocol.Mqtt;
using Relay.Server.Devices;

namespace Relay.Server.Mqtt;

internal sealed partial class MqttBroker : IDevicePresence, IDeviceConnections, IMqttDeviceChannel
{
    public bool Disconnect(string deviceId)
    {
        var state = FindSession(deviceId);
        MqttConnection? connection;
        if (state is null)
        {
            return false;
        }

        lock (state.Sync)
        {
            connection = state.Connection;
        }

        return connection is not null && connection.RequestEnd(MqttEndReason.Administrative, MqttReasonCode.AdministrativeAction);
    }

    // Last disconnect per client id, so presence can answer "last seen" for sessions that ended with
    // their connection. Bounded: past the cap the oldest half is forgotten (their LastSeen becomes unknown).
    private const int MaxLastSeen = 200_000;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, DateTimeOffset> _lastSeen = new(StringComparer.Ordinal);

    private IMqttMessageObserver[] _observers = [];
    private IMqttClientObserver[] _clientObservers = [];

    /// <summary>Installed once by DI (see <see cref="MqttServices"/>); empty when nothing is registered.</summary>
    public void SetObservers(IEnumerable<IMqttMessageObserver> observers, IEnumerable<IMqttClientObserver> clientObservers)
    {
        _observers = [.. observers];
        _clientObservers = [.. clientObservers];
    }

    public bool HasObservers => _observers.Length > 0 || _clientObservers.Length > 0;

    /// <summary>
    /// Sends <paramref name="message"/> to <paramref name="clientId"/>'s connection if it is online and has a
    /// (non-shared) subscription matching the topic, at min(message QoS, the subscription's maximum). Returns
    /// false when it did not go to that connection (offline, not subscribed, queue full). The message is not
    /// stored by the broker and does not outlive the connection: the caller owns redelivery. Its
    /// acknowledgement is reported through <see cref="IMqttMessageObserver.OnMessageDelivered"/> with <paramref name="tag"/>.
    /// Only a session the device <paramref name="clientId"/> itself owns receives it: commands and rendezvous
    /// offers never go to another principal that picked the device's client id.
    /// </summary>
    public bool PublishToClient(string clientId, StoredMessage message, object? tag)
    {
        var state = FindSession(clientId);
        if (state is null)
        {
            return false;
        }

        lock (state.Sync)
        {
            if (!MqttIdentity.IsDeviceOwner(state.Owner, clientId))
            {
                return false;
            }

            if (state.Ended || state.Connection is not { IsClosing: false } connection || state.Subscriptions is null)
            {
                return false;
            }

            MqttSubscription? best = null;
            foreach (var subscription in state.Subscriptions.Values)
            {
                if (subscription.ShareGroup is null && MqttTopic.Matches(subscription.InnerFilter, message.Topic) && (best is null || subscription.MaximumQoS > best.MaximumQoS))
                {
                    best = subscription;
                }
            }

            if (best is null)
            {
                return false;
            }

            var outgoing = new MqttOutgoing(message, Math.Min(message.QoS, best.MaximumQoS), false, best.SubscriptionIdentifier == 0 ? null : [best.SubscriptionIdentifier]) { Tag = tag };
            if (outgoing.QoS == 0)
            {
                return connection.SendPublish(outgoing, dup: false) == MqttSendResult.Sent;
            }

            if (state.QueuedCount == 0 && state.InflightCount < connection.SendWindow)
            {
                SendNewLocked(state, connection, outgoing);
                return true;
            }

            if (state.QueuedCount >= _options.MaxQueuedMessages)
            {
                _metrics.LimitHit(MqttLimit.QueuedMessages);
                return false;
            }

            (state.Queue ??= new()).Enqueue(outgoing);
            return true;
        }
    }

    /// <summary>Tagged (server-published) messages leave with the connection: their publisher redelivers them. Caller holds the lock.</summary>
    private static void DropTaggedLocked(MqttSession state)
    {
        state.Inflight?.RemoveAll(static o => o.Tag is not null);
        if (state.Queue is { Count: > 0 } queue && queue.Any(static o => o.Tag is not null))
        {
            state.Queue = new(queue.Where(static o => o.Tag is null));
        }
    }

    public void NotifyConnected(string clientId, byte version, IPEndPoint? remote, DateTimeOffset at)
    {
        foreach (var observer in _clientObservers)
        {
            try
            {
                observer.OnClientConnected(clientId, version, remote, at);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogObserverFailed(e, observer.GetType().Name);
            }
        }
    }

    private void NotifyDisconnected(string clientId, DateTimeOffset at)
    {
        if (_lastSeen.Count >= MaxLastSeen)
        {
            foreach (var key in _lastSeen.OrderBy(static p => p.Value).Take(MaxLastSeen / 2).Select(static p => p.Key).ToArray())
            {
                _lastSeen.TryRemove(key, out _);
            }
        }

        _lastSeen[clientId] = at;
        foreach (var observer in _clientObservers)
        {
            try
            {
                observer.OnClientDisconnected(clientId, at);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogObserverFailed(e, observer.GetType().Name);
            }
        }
    }

    public void NotifySubscribed(string clientId, string filter)
    {
        foreach (var observer in _clientObservers)
        {
            try
            {
                observer.OnSubscribed(clientId, filter);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogObserverFailed(e, observer.GetType().Name);
            }
        }
    }

    /// <summary>False when an observer could not keep the message: the caller must not acknowledge it as received.</summary>
    public async ValueTask<bool> NotifyReceivedAsync(string clientId, StoredMessage message)
    {
        var kept = true;
        foreach (var observer in _observers)
        {
            try
            {
                kept &= await observer.OnMessageReceived(clientId, message).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogObserverFailed(e, observer.GetType().Name);
            }
        }

        return kept;
    }

    public void NotifyDelivered(string clientId, MqttOutgoing outgoing)
    {
        foreach (var observer in _observers)
        {
            try
            {
                observer.OnMessageDelivered(clientId, outgoing.Message.Topic, outgoing.Tag);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogObserverFailed(e, observer.GetType().Name);
            }
        }
    }

    /// <inheritdoc/>
    public DevicePresence Get(string deviceId)
    {
        var state = FindSession(deviceId);
        if (state is not null)
        {
            lock (state.Sync)
            {
                if (state.Connection is { } connection)
                {
                    return new DevicePresence(deviceId, true, _time.GetUtcNow(), connection.RemoteEndPoint, connection.ProtocolVersion, connection.ConnectedAt);
                }
            }
        }

        DateTimeOffset? lastSeen = _lastSeen.TryGetValue(deviceId, out var seen) ? seen : state?.DisconnectedAt;
        return new DevicePresence(deviceId, false, lastSeen, null, 0, null);
    }

    /// <inheritdoc/>
    public bool IsOnline(string deviceId) => FindSession(deviceId) is { IsOnline: true };

    /// <summary>Whether <paramref name="clientId"/>'s session belongs to the device of that id (not another principal using its id).</summary>
    public bool IsDeviceSession(string clientId) => FindSession(clientId) is { } state && MqttIdentity.IsDeviceOwner(state.Owner, clientId);

    [LoggerMessage(EventId = 5030, Level = LogLevel.Error, Message = "MQTT: extension observer {Observer} threw; ignored")]
    private partial void LogObserverFailed(Exception exception, string observer);
}
