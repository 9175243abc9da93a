using System.Buffers;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.DeviceClient.Internal;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient;

/// <summary>
/// The device side of Relay: one MQTT connection (TCP, TLS or WebSocket) kept up with backoff, a persistent
/// session subscribed to <c>devices/{id}/commands</c>, command handlers whose results go to
/// <c>devices/{id}/results</c>, and an offline queue for publishes. Faults are reported through
/// <see cref="Error"/> and never thrown into the host.
/// </summary>
public sealed class RelayDeviceClient : IAsyncDisposable, IMqttClientOwner
{
    // A facade: the MQTT session lives in MqttClientCore, the commands in CommandDispatcher, peer rendezvous in
    // RendezvousSignalling. This class routes what the server publishes to them and raises the public events.
    private readonly ILogger _logger;
    private readonly MqttClientCore _mqtt;
    private readonly CommandDispatcher _commands;
    private readonly RendezvousSignalling? _peers;
    private readonly BackgroundTasks _work = new();
    private readonly byte[] _commandsTopic;
    private readonly string _telemetryPrefix;

    /// <summary>Creates a client; nothing happens until <see cref="StartAsync"/>.</summary>
    public RelayDeviceClient(DeviceClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Server);
        ArgumentException.ThrowIfNullOrEmpty(options.DeviceId);
        var time = options.TimeProvider ?? TimeProvider.System;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Relay.DeviceClient");
        var commandsTopic = $"devices/{options.DeviceId}/commands";
        _commandsTopic = Encoding.UTF8.GetBytes(commandsTopic);
        _telemetryPrefix = $"devices/{options.DeviceId}/telemetry/";

        // docs/rendezvous.md: the signalling is subscribed in the same SUBSCRIBE as the commands; the first
        // SUBACK code (the commands') decides, as a refused rendezvous filter only disables peers.
        string[] subscriptions = options.Peers.Enabled ? [commandsTopic, RendezvousSignalling.InTopic(options.DeviceId)] : [commandsTopic];
        _mqtt = new MqttClientCore(options, time, _logger, subscriptions, this);
        _commands = new CommandDispatcher(options, _mqtt, time, _logger, _work, RaiseError);
        if (options.Peers.Enabled)
        {
            _peers = new RendezvousSignalling(options.Peers, options.DeviceId, _mqtt, time, _logger, _work, RaiseError, OnPeerConnected);
        }
    }

    /// <summary>The connection state.</summary>
    public DeviceConnectionState State => _mqtt.State;

    /// <summary>The MQTT version of the live connection; null when not connected.</summary>
    public MqttProtocolVersion? ProtocolVersion => _mqtt.ProtocolVersion;

    /// <summary>Raised on every state change, on the thread that made it. Handler exceptions are reported through <see cref="Error"/>.</summary>
    public event EventHandler<DeviceConnectionStateChangedEventArgs>? StateChanged;

    /// <summary>Connection and protocol faults, malformed commands, handler exceptions. Never thrown into the host.</summary>
    public event EventHandler<DeviceClientErrorEventArgs>? Error;

    /// <summary>An incoming offer was accepted (<see cref="PeerOptions.AcceptFrom"/>) and its channel is usable; the handler owns the channel.</summary>
    public event EventHandler<PeerChannelEventArgs>? PeerConnected;

    /// <summary>A snapshot of the counters.</summary>
    public DeviceClientStatistics Statistics => new()
    {
        ConnectAttempts = _mqtt.ConnectAttempts,
        Reconnects = Math.Max(0, _mqtt.Connections - 1),
        QueuedMessages = _mqtt.QueuedMessages,
        DroppedMessages = _mqtt.DroppedMessages,
        PublishedMessages = _mqtt.PublishedMessages,
        ResentMessages = _mqtt.ResentMessages,
        CommandsExecuted = _commands.Executed,
        DuplicateCommands = _commands.Duplicates,
        ProtocolErrors = _mqtt.ProtocolErrors,
    };

    /// <summary>Starts the background connect/reconnect loop; returns at once.</summary>
    public Task StartAsync(CancellationToken cancellationToken = default)
    {
        _mqtt.Start();
        return Task.CompletedTask;
    }

    /// <summary>Completes when the client is connected (at once if it is).</summary>
    public Task WaitConnectedAsync(CancellationToken cancellationToken = default) => _mqtt.WaitConnectedAsync(cancellationToken);

    /// <summary>
    /// Sends DISCONNECT (0x00 normal), stops reconnecting, cancels running handlers (their commands are not
    /// acknowledged, so the server delivers them again later) and flushes the persisted queue.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_mqtt.Stopping.IsCancellationRequested)
        {
            return;
        }

        await _mqtt.StopConnectingAsync(cancellationToken).ConfigureAwait(false);

        // Handlers see the stop on their token; what they publish on the way out is queued and journaled.
        await _work.WhenAll().ConfigureAwait(false);
        await _mqtt.CloseAsync().ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _mqtt.Dispose();
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
        await _mqtt.PublishAsync(message, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Publishes UTF-8 JSON to <c>devices/{id}/telemetry/{name}</c> at QoS 1, through the offline queue when offline.</summary>
    public ValueTask PublishTelemetryAsync(string name, ReadOnlyMemory<byte> utf8Json, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return PublishAsync(_telemetryPrefix + name, utf8Json, 1, false, cancellationToken);
    }

    /// <summary>
    /// Registers the handler for commands named <paramref name="name"/> (replacing an earlier one). It runs at
    /// most once per command id; its token is canceled when the command's expiresAt passes or at StopAsync.
    /// </summary>
    public void OnCommand(string name, Func<DeviceCommand, CancellationToken, Task<CommandResult>> handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handler);
        _commands.Register(name, handler);
    }

    /// <summary>
    /// Asks the server to introduce this device to <paramref name="peerId"/> (docs/rendezvous.md) and returns
    /// the channel as soon as the relayed path works (relay first); it upgrades itself to a direct path in
    /// the background when a connectivity check succeeds.
    /// </summary>
    /// <exception cref="PeerConnectException">The server refused (<c>forbidden</c>, <c>offline</c>, <c>rejected</c>, ...).</exception>
    /// <exception cref="OperationCanceledException">Not done within <see cref="PeerOptions.ConnectTimeout"/>, or canceled.</exception>
    public async Task<PeerChannel> ConnectPeerAsync(string peerId, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(peerId);
        var peers = _peers ?? throw new InvalidOperationException("Peer sessions are disabled (DeviceClientOptions.Peers.Enabled).");
        await WaitConnectedAsync(ct).ConfigureAwait(false);
        return await peers.ConnectAsync(peerId, ct).ConfigureAwait(false);
    }

    void IMqttClientOwner.OnStateChanged(DeviceConnectionState previous, DeviceConnectionState current, Exception? error, MqttProtocolVersion? version)
    {
        try
        {
            StateChanged?.Invoke(this, new DeviceConnectionStateChangedEventArgs(previous, current, error, version));
        }
#pragma warning disable CA1031 // A host's handler must not break the connection loop.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RaiseError("A StateChanged handler threw.", ex);
        }
    }

    void IMqttClientOwner.OnError(string message, Exception? exception) => RaiseError(message, exception);

    void IMqttClientOwner.OnConnected() => _peers?.OnConnected();

    /// <summary>Routes a PUBLISH by topic: commands, rendezvous signalling, or neither.</summary>
    async ValueTask<string?> IMqttClientOwner.OnPublishAsync(MqttConnection connection, MqttPublish publish)
    {
        if (TopicIs(publish.Topic, _commandsTopic))
        {
            return await _commands.OnDeliveryAsync(connection, publish).ConfigureAwait(false);
        }

        // Anything else is acknowledged: signalling once handed over, and what is not ours to handle
        // (a wider subscription of a persistent session) dropped.
        if (_peers is not null && TopicIs(publish.Topic, _peers.InTopicUtf8))
        {
            _peers.OnMessage(publish.Payload);
        }

        await connection.AcknowledgeAsync(publish.QoS, publish.PacketId).ConfigureAwait(false);
        return null;
    }

    private static bool TopicIs(in ReadOnlySequence<byte> topic, ReadOnlySpan<byte> expected)
    {
        if (topic.Length != expected.Length)
        {
            return false;
        }

        if (topic.IsSingleSegment)
        {
            return topic.FirstSpan.SequenceEqual(expected);
        }

        Span<byte> copy = stackalloc byte[expected.Length];
        topic.CopyTo(copy);
        return copy.SequenceEqual(expected);
    }

    private void OnPeerConnected(PeerChannel channel)
    {
        var handler = PeerConnected;
        if (handler is null)
        {
            // Nobody takes it: close it rather than leak a socket and an allocation.
            _ = channel.DisposeAsync().AsTask();
            return;
        }

        try
        {
            handler(this, new PeerChannelEventArgs(channel));
        }
#pragma warning disable CA1031 // A host's handler must not break the signalling.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RaiseError("A PeerConnected handler threw.", ex);
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
