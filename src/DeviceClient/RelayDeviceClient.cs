using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.DeviceClient.Internal;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient;

/// <summary>
/// The device side of Relay: one MQTT connection (TCP, TLS or WebSocket) kept up with backoff, a persistent
/// session subscribed to <c>devices/{id}/commands</c>, command handlers whose results go to
/// <c>devices/{id}/results</c>, and an offline queue for publishes. Faults are reported through
/// <see cref="Error"/> and never thrown into the host.
/// </summary>
public sealed partial class RelayDeviceClient : IAsyncDisposable, IMqttPacketHandler
{
    private const int MaxInflight = 32;

    private readonly DeviceClientOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ReconnectBackoff _backoff;
    private readonly OfflineQueue _queue;
    private readonly object _gate = new();
    private readonly Dictionary<ushort, Inflight> _inflight = [];
    private readonly SemaphoreSlim _inflightSlots = new(MaxInflight, MaxInflight);
    private readonly CancellationTokenSource _stop = new();
    private readonly byte[] _commandsTopic;
    private readonly string _resultsTopic;
    private readonly string _telemetryPrefix;

    private DeviceConnectionState _state = DeviceConnectionState.Disconnected;
    private TaskCompletionSource _connected = NewSignal();
    private MqttConnection? _connection;
    private MqttProtocolVersion? _workingVersion;
    private TaskCompletionSource? _pingResponse;
    private TaskCompletionSource<byte>? _subAck;
    private ushort _subAckId;
    private ushort _nextPacketId;
    private long _sendOrder;
    private Task? _run;
    private int _started;

    private long _connectAttempts;
    private long _connections;
    private long _dropped;
    private long _published;
    private long _resent;
    private long _commandsExecuted;
    private long _duplicates;
    private long _protocolErrors;

    /// <summary>Creates a client; nothing happens until <see cref="StartAsync"/>.</summary>
    public RelayDeviceClient(DeviceClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Server);
        ArgumentException.ThrowIfNullOrEmpty(options.DeviceId);
        _options = options;
        _time = options.TimeProvider ?? TimeProvider.System;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Relay.DeviceClient");
        _backoff = new ReconnectBackoff(options.Reconnect, _time, options.Random ?? Random.Shared.NextDouble);
        _queue = new OfflineQueue(options.OfflineQueue);
        _commandsTopic = Encoding.UTF8.GetBytes($"devices/{options.DeviceId}/commands");
        _resultsTopic = $"devices/{options.DeviceId}/results";
        _telemetryPrefix = $"devices/{options.DeviceId}/telemetry/";
        _commandMemory = new CommandMemory(options.Commands.RememberedResults, options.Commands.StateFilePath);
        _commandSlots = new SemaphoreSlim(Math.Max(1, options.Commands.MaxConcurrentCommands));

        // Persisted state is loaded here, not at start, so publishes made before StartAsync are journaled too.
        var loaded = _queue.Load();
        if (loaded > 0)
        {
            _logger.LogInformation("Loaded {Count} queued messages from {Path}", loaded, options.OfflineQueue.FilePath);
        }

        _commandMemory.Load();
    }

    /// <summary>The connection state.</summary>
    public DeviceConnectionState State
    {
        get
        {
            lock (_gate)
            {
                return _state;
            }
        }
    }

    /// <summary>The MQTT version of the live connection; null when not connected.</summary>
    public MqttProtocolVersion? ProtocolVersion => _connection?.Version;

    /// <summary>Raised on every state change, on the thread that made it. Handler exceptions are reported through <see cref="Error"/>.</summary>
    public event EventHandler<DeviceConnectionStateChangedEventArgs>? StateChanged;

    /// <summary>Connection and protocol faults, malformed commands, handler exceptions. Never thrown into the host.</summary>
    public event EventHandler<DeviceClientErrorEventArgs>? Error;

    /// <summary>A snapshot of the counters.</summary>
    public DeviceClientStatistics Statistics => new()
    {
        ConnectAttempts = Interlocked.Read(ref _connectAttempts),
        Reconnects = Math.Max(0, Interlocked.Read(ref _connections) - 1),
        QueuedMessages = _queue.Count,
        DroppedMessages = Interlocked.Read(ref _dropped),
        PublishedMessages = Interlocked.Read(ref _published),
        ResentMessages = Interlocked.Read(ref _resent),
        CommandsExecuted = Interlocked.Read(ref _commandsExecuted),
        DuplicateCommands = Interlocked.Read(ref _duplicates),
        ProtocolErrors = Interlocked.Read(ref _protocolErrors),
    };

    /// <summary>Starts the background connect/reconnect loop; returns at once.</summary>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("The client was started already.");
        }

        _run = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>Completes when the client is connected (at once if it is).</summary>
    public Task WaitConnectedAsync(CancellationToken cancellationToken = default)
    {
        Task signal;
        lock (_gate)
        {
            if (_state == DeviceConnectionState.Stopped)
            {
                return Task.FromException(new InvalidOperationException("The client is stopped."));
            }

            signal = _connected.Task;
        }

        return signal.WaitAsync(cancellationToken);
    }

    /// <summary>
    /// Sends DISCONNECT (0x00 normal), stops reconnecting, cancels running handlers (their commands are not
    /// acknowledged, so the server delivers them again later) and flushes the persisted queue.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }

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

        Task[] commands;
        lock (_commandTasks)
        {
            commands = [.. _commandTasks];
        }

        await Task.WhenAll(commands).ConfigureAwait(false);

        lock (_gate)
        {
            foreach (var inflight in _inflight.Values)
            {
                _queue.Persist(inflight.Message);
                inflight.Done?.TrySetException(new OperationCanceledException("The client stopped before the PUBACK."));
            }
        }

        _queue.Dispose();
        SetState(DeviceConnectionState.Stopped, null);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stop.Dispose();
    }

    /// <summary>
    /// Connected (and nothing queued before it): sends now; QoS 1 completes on PUBACK (or throws
    /// <see cref="TimeoutException"/> after OperationTimeout; the message is still resent after a reconnect).
    /// Otherwise the message goes to the offline queue and the call completes when it is queued.
    /// </summary>
    public async ValueTask PublishAsync(string topic, ReadOnlyMemory<byte> payload, int qos = 1, bool retain = false, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topic);
        if (qos is not (0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(qos), "QoS 0 or 1.");
        }

        var message = new OutgoingMessage(Encoding.UTF8.GetBytes(topic), payload.ToArray(), (byte)qos, retain, null, null);
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

    /// <summary>Publishes UTF-8 JSON to <c>devices/{id}/telemetry/{name}</c> at QoS 1, through the offline queue when offline.</summary>
    public ValueTask PublishTelemetryAsync(string name, ReadOnlyMemory<byte> utf8Json, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return PublishAsync(_telemetryPrefix + name, utf8Json, 1, false, cancellationToken);
    }

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

    /// <summary>Sends one message; QoS 1 takes an in-flight slot and returns the PUBACK task.</summary>
    private async ValueTask<Task?> SendAsync(MqttConnection connection, OutgoingMessage message, bool waitForAck, CancellationToken cancellationToken)
    {
        if (message.QoS == 0)
        {
            await connection.SendPublishAsync(message.Topic, message.Payload, 0, message.Retain, false, 0, message.CorrelationData, message.ContentType, cancellationToken).ConfigureAwait(false);
            Interlocked.Increment(ref _published);
            _queue.Complete(message);
            return null;
        }

        await _inflightSlots.WaitAsync(cancellationToken).ConfigureAwait(false);
        Inflight inflight;
        lock (_gate)
        {
            var id = AllocatePacketIdLocked();
            inflight = new Inflight(id, message, ++_sendOrder, waitForAck ? new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) : null);
            _inflight[id] = inflight;
        }

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

    private ushort AllocatePacketIdLocked()
    {
        while (true)
        {
            _nextPacketId = (ushort)(_nextPacketId == ushort.MaxValue ? 1 : _nextPacketId + 1);
            if (!_inflight.ContainsKey(_nextPacketId) && _nextPacketId != _subAckId)
            {
                return _nextPacketId;
            }
        }
    }

    private sealed class Inflight(ushort packetId, OutgoingMessage message, long order, TaskCompletionSource? done)
    {
        public ushort PacketId { get; } = packetId;

        public OutgoingMessage Message { get; } = message;

        public long Order { get; } = order;

        public TaskCompletionSource? Done { get; } = done;
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private void SetState(DeviceConnectionState state, Exception? error)
    {
        DeviceConnectionState previous;
        lock (_gate)
        {
            previous = _state;
            if (previous == state || previous == DeviceConnectionState.Stopped)
            {
                return;
            }

            _state = state;
            if (state == DeviceConnectionState.Connected)
            {
                _connected.TrySetResult();
            }
            else if (previous == DeviceConnectionState.Connected)
            {
                _connected = NewSignal();
            }

            if (state == DeviceConnectionState.Stopped)
            {
                _connected.TrySetException(new InvalidOperationException("The client is stopped."));
                _ = _connected.Task.Exception; // observed: waiters get it, nobody else must
            }
        }

        try
        {
            StateChanged?.Invoke(this, new DeviceConnectionStateChangedEventArgs(previous, state, error, state == DeviceConnectionState.Connected ? _connection?.Version : null));
        }
#pragma warning disable CA1031 // A host's handler must not break the connection loop.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RaiseError("A StateChanged handler threw.", ex);
        }
    }

    private void RaiseError(string message, Exception? exception)
    {
        _logger.LogWarning(exception, "{Message}", message);
        try
        {
            Error?.Invoke(this, new DeviceClientErrorEventArgs(message, exception));
        }
#pragma warning disable CA1031 // A host's handler must not break the connection loop.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _logger.LogError(ex, "An Error handler threw");
        }
    }
}
