using System.Net;

namespace Relay.Server.Mqtt;

/// <summary>
/// Fans broker events out to the registered <see cref="IMqttMessageObserver"/>s and <see cref="IMqttClientObserver"/>s
/// (see <c>MqttExtensionPoints.cs</c> for what they may do). An observer's exception is logged and swallowed: it
/// never ends a connection. The observers are installed once at start, not injected: they usually need the
/// broker themselves.
/// </summary>
internal sealed partial class MqttObservers
{
    private readonly ILogger _logger;
    private IMqttMessageObserver[] _messages = [];
    private IMqttClientObserver[] _clients = [];

    public MqttObservers(ILogger<MqttObservers> logger)
    {
        _logger = logger;
    }

    /// <summary>Whether any observer is installed: callers skip building what only observers need.</summary>
    public bool Any => _messages.Length > 0 || _clients.Length > 0;

    /// <summary>Installs the observers; called once by <see cref="MqttBrokerService"/> at start, before any client connects.</summary>
    public void Install(IEnumerable<IMqttMessageObserver> messages, IEnumerable<IMqttClientObserver> clients)
    {
        _messages = [.. messages];
        _clients = [.. clients];
    }

    public void Connected(string clientId, byte version, IPEndPoint? remote, DateTimeOffset at)
    {
        foreach (var observer in _clients)
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

    public void Disconnected(string clientId, DateTimeOffset at)
    {
        foreach (var observer in _clients)
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

    public void Subscribed(string clientId, string filter)
    {
        foreach (var observer in _clients)
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

    /// <summary>
    /// A client's PUBLISH was routed; the client's acknowledgement waits for this (see
    /// <see cref="IMqttMessageObserver.OnMessageReceived"/>). False when an observer could not keep the message:
    /// the caller must not acknowledge it as received.
    /// </summary>
    public async ValueTask<bool> ReceivedAsync(string clientId, StoredMessage message)
    {
        var kept = true;
        foreach (var observer in _messages)
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

    public void Delivered(string clientId, MqttOutgoing outgoing)
    {
        foreach (var observer in _messages)
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

    [LoggerMessage(EventId = 5030, Level = LogLevel.Error, Message = "MQTT: extension observer {Observer} threw; ignored")]
    private partial void LogObserverFailed(Exception exception, string observer);
}
