using System.Text;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>
/// The device's MQTT client engine: one connection at a time (TCP, TLS or WebSocket) kept up with backoff,
/// a persistent session subscribed to the owner's filters, QoS 1 publishes that are resent with DUP after a
/// reconnect (§4.4), keep-alive (§3.1.2.10), and the bounded offline queue, drained at a set rate while
/// connected. What the messages mean is left to its <see cref="IMqttClientOwner"/>.
/// </summary>
/// <remarks>
/// The connect loop (<see cref="RunAsync"/>) owns the live connection. The rest of the shared state belongs
/// to collaborators with their own locks, none held across an await or a call to the owner: the state
/// (<see cref="ConnectionStatus"/>), the send window (<see cref="InflightWindow"/>), the subscriptions, the
/// keep-alive and the offline queue.
/// </remarks>
internal sealed partial class MqttClientCore : IMqttPacketHandler, IDisposable
{
    /// <summary>QoS 1 messages in flight at once; also the Receive Maximum sent in CONNECT (MQTT 5 §3.1.2.11.3).</summary>
    public const int MaxInflight = 32;

    private readonly DeviceClientOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly IMqttClientOwner _owner;
    private readonly MqttSubscriptions _subscriptions;
    private readonly MqttConnector _connector;
    private readonly ReconnectBackoff _backoff;
    private readonly OfflineQueue _queue;
    private readonly InflightWindow _inflight = new(MaxInflight);
    private readonly ConnectionStatus _status = new();
    private readonly MqttKeepAlive _keepAlive;
    private readonly BackgroundTasks _sends = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationToken _stopping;

    private MqttConnection? _connection;
    private Task? _run;
    private int _started;

    private long _connections;
    private long _dropped;
    private long _published;
    private long _resent;
    private long _protocolErrors;

    /// <summary>
    /// Creates the engine and loads the persisted offline queue, so that publishes made before
    /// <see cref="Start"/> are journaled too. <paramref name="subscriptions"/> go in one SUBSCRIBE; the first
    /// is required (a refusal closes the connection), the others are optional (<see cref="IsGranted"/>).
    /// </summary>
    public MqttClientCore(DeviceClientOptions options, TimeProvider time, ILogger logger, string[] subscriptions, IMqttClientOwner owner)
    {
        _options = options;
        _time = time;
        _logger = logger;
        _owner = owner;
        _stopping = _stop.Token;
        _subscriptions = new MqttSubscriptions(subscriptions, _inflight, options.OperationTimeout, time);
        _connector = new MqttConnector(options, logger, time, MaxInflight);
        _keepAlive = new MqttKeepAlive(options.KeepAlive, options.OperationTimeout, time);
        _backoff = new ReconnectBackoff(options.Reconnect, time, options.Random ?? Random.Shared.NextDouble);
        _queue = new OfflineQueue(options.OfflineQueue);
        var loaded = _queue.Load();
        if (loaded > 0)
        {
            _logger.LogInformation("Loaded {Count} queued messages from {Path}", loaded, options.OfflineQueue.FilePath);
        }
    }

    public DeviceConnectionState State => _status.Current;

    /// <summary>The MQTT version of the live connection; null when not connected.</summary>
    public MqttProtocolVersion? ProtocolVersion => _connection?.Version;

    /// <summary>Canceled when the client stops: the end of everything it runs.</summary>
    public CancellationToken Stopping => _stopping;

    public long ConnectAttempts => _connector.Attempts;

    /// <summary>Connections that were accepted (CONNACK 0).</summary>
    public long Connections => Interlocked.Read(ref _connections);

    public int QueuedMessages => _queue.Count;

    public long DroppedMessages => Interlocked.Read(ref _dropped);

    public long PublishedMessages => Interlocked.Read(ref _published);

    public long ResentMessages => Interlocked.Read(ref _resent);

    public long ProtocolErrors => Interlocked.Read(ref _protocolErrors);

    /// <summary>Starts the background connect/reconnect loop; returns at once.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("The client was started already.");
        }

        _run = Task.Run(() => RunAsync(_stopping), CancellationToken.None);
    }

    /// <summary>Completes when connected (at once if it is); fails when the client is stopped.</summary>
    public Task WaitConnectedAsync(CancellationToken cancellationToken) => _status.WaitConnectedAsync(cancellationToken);

    /// <summary>
    /// Connected (and nothing queued before it): sends now; QoS 1 completes on PUBACK (or throws
    /// <see cref="TimeoutException"/> after OperationTimeout; the message is still resent after a reconnect).
    /// Otherwise the message goes to the offline queue and the call completes when it is queued.
    /// </summary>
    public async ValueTask PublishAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        var connection = _connection;
        if (connection is null || _queue.Count > 0)
        {
            Enqueue(message);
            return;
        }

        var done = await SendAsync(connection, message, waitForAck: true, cancellationToken).ConfigureAwait(false);
        if (done is not null)
        {
            await done.WaitAsync(_options.OperationTimeout, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// As <see cref="PublishAsync"/>, but nobody waits: sent in the background when connected, queued otherwise,
    /// and journaled when the client stops before it went out.
    /// </summary>
    public void Post(OutgoingMessage message)
    {
        var connection = _connection;
        if (connection is null || _queue.Count > 0)
        {
            Enqueue(message);
            return;
        }

        _sends.Track(SendInBackgroundAsync(connection, message));
    }

    /// <summary>
    /// On the live connection only, QoS 1, completing on PUBACK: for messages worthless later (rendezvous
    /// signalling), which must not take a place in the bounded offline queue from the application's.
    /// </summary>
    public async Task PublishLiveAsync(OutgoingMessage message, CancellationToken cancellationToken)
    {
        var connection = _connection ?? throw new InvalidOperationException("Not connected to the server: rendezvous signalling is not queued.");
        var done = await SendAsync(connection, message, waitForAck: true, cancellationToken).ConfigureAwait(false);
        if (done is not null)
        {
            await done.WaitAsync(_options.OperationTimeout, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Whether the server granted <paramref name="filter"/> in the last SUBACK (false before one came).</summary>
    public bool IsGranted(string filter) => _subscriptions.IsGranted(filter);

    /// <summary>
    /// Adds a subscription that every later connection holds too. Connected: subscribes now and completes on the
    /// SUBACK (throws <see cref="InvalidOperationException"/> when the server refuses it). Offline: completes at
    /// once; the filter is subscribed when the next connection is made.
    /// </summary>
    public async Task AddSubscriptionAsync(string filter, CancellationToken cancellationToken)
    {
        _subscriptions.Add(filter);
        var connection = _connection;
        if (connection is null)
        {
            return;
        }

        List<(string Filter, byte Code)> refused;
        string? fault;
        try
        {
            (refused, fault) = await _subscriptions.SubscribeAddedAsync(connection).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or System.Net.WebSockets.WebSocketException
            || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            // The connection dropped: the next one subscribes it.
            return;
        }

        if (fault is not null)
        {
            Fail(connection, fault);
            return;
        }

        foreach (var (refusedFilter, code) in refused)
        {
            if (refusedFilter == filter)
            {
                throw new InvalidOperationException(
                    $"The server refused the subscription to {filter}: 0x{code:X2} (not authorized, or over its subscription quota).");
            }
        }
    }

    /// <summary>
    /// The first half of a stop: DISCONNECT (0x00 normal) on the live connection, no more reconnects, and
    /// the connect loop ended. The owner then finishes its own work and calls <see cref="CloseAsync"/>.
    /// </summary>
    public async Task StopConnectingAsync(CancellationToken cancellationToken)
    {
        var connection = _connection;
        if (connection is not null)
        {
            try
            {
                using var timeout = new CancellationTokenSource(_options.OperationTimeout, _time);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
                await connection.SendDisconnectAsync(linked.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException or System.Net.WebSockets.WebSocketException)
            {
                // Closing anyway.
            }
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        if (_run is not null)
        {
            await _run.ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The second half of a stop, once nothing publishes any more: unacknowledged messages go to the
    /// journal (sent after a restart), the queue is closed, and the state becomes Stopped.
    /// </summary>
    public async Task CloseAsync()
    {
        await _sends.WhenAll().ConfigureAwait(false);
        foreach (var inflight in _inflight.Snapshot())
        {
            _queue.Persist(inflight.Message);
            inflight.Done?.TrySetException(new OperationCanceledException("The client stopped before the PUBACK."));
        }

        _queue.Dispose();
        SetState(DeviceConnectionState.Stopped, null);
    }

    public void Dispose() => _stop.Dispose();

    private void Enqueue(OutgoingMessage message)
    {
        var dropped = _queue.Enqueue(message);
        if (dropped is not null)
        {
            Interlocked.Increment(ref _dropped);
            _logger.LogWarning(
                "Offline queue full ({Capacity}, {Policy}): dropped a message to {Topic}",
                _options.OfflineQueue.Capacity,
                _options.OfflineQueue.DropPolicy,
                Encoding.UTF8.GetString(dropped.Topic));
        }
    }

    /// <summary>Sends one message; QoS 1 takes a place in the send window and returns the PUBACK task.</summary>
    private async ValueTask<Task?> SendAsync(MqttConnection connection, OutgoingMessage message, bool waitForAck, CancellationToken cancellationToken)
    {
        if (message.QoS == 0)
        {
            await connection.SendPublishAsync(message.Topic, message.Payload, 0, message.Retain, false, 0, message.CorrelationData, message.ContentType, cancellationToken).ConfigureAwait(false);
            Interlocked.Increment(ref _published);
            _queue.Complete(message);
            return null;
        }

        var inflight = await _inflight.AddAsync(message, waitForAck, cancellationToken).ConfigureAwait(false);
        try
        {
            await connection.SendPublishAsync(message.Topic, message.Payload, 1, message.Retain, false, inflight.PacketId, message.CorrelationData, message.ContentType, cancellationToken).ConfigureAwait(false);
            Interlocked.Increment(ref _published);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or System.Net.WebSockets.WebSocketException)
        {
            // Stays in flight: resent with DUP after the reconnect (at least once).
            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
        }

        return inflight.Done?.Task;
    }

    private async Task SendInBackgroundAsync(MqttConnection connection, OutgoingMessage message)
    {
        try
        {
            await SendAsync(connection, message, waitForAck: false, _stopping).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _queue.Persist(message);
        }
    }

    private void SetState(DeviceConnectionState state, Exception? error)
    {
        if (_status.TryMoveTo(state, out var previous))
        {
            _owner.OnStateChanged(previous, state, error, state == DeviceConnectionState.Connected ? _connection?.Version : null);
        }
    }
}
