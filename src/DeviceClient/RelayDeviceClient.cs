using System.Buffers;
using System.Text;
using System.Text.Json;
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
    private readonly MessageDispatcher _messages;
    private readonly BackgroundTasks _work = new();
    private readonly byte[] _commandsTopic;
    private readonly string _telemetryPrefix;
    private readonly string _deviceId;
    private readonly string _devicePrefix;
    private readonly string _reportedTopic;

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
        _deviceId = options.DeviceId;
        _devicePrefix = $"devices/{options.DeviceId}/";
        _reportedTopic = $"devices/{options.DeviceId}/twin/reported";
        _messages = new MessageDispatcher(options.DeviceId, _logger, RaiseError);

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
        _work.Track(_messages.RunAsync(_mqtt.Stopping));
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
    /// Reports the device's state: <paramref name="utf8JsonPatch"/> is a JSON object merged into the reported
    /// document on the server (JSON Merge Patch, RFC 7386: a member set to null is removed), for example
    /// <c>{"interval": 5, "led": "on"}</c>. Published to <c>devices/{id}/twin/reported</c> at QoS 1, through the
    /// offline queue when offline, so reports reach the server in order.
    /// </summary>
    /// <exception cref="ArgumentException">The patch is not one JSON object.</exception>
    public ValueTask ReportStateAsync(ReadOnlyMemory<byte> utf8JsonPatch, CancellationToken cancellationToken = default)
    {
        if (!IsJsonObject(utf8JsonPatch.Span))
        {
            throw new ArgumentException("The state patch must be one JSON object, for example {\"led\": \"on\"}.", nameof(utf8JsonPatch));
        }

        return PublishAsync(_reportedTopic, utf8JsonPatch, 1, false, cancellationToken);
    }

    /// <summary>
    /// Registers the handler of desired-state deltas (replacing an earlier one) and subscribes to
    /// <c>devices/{id}/twin/delta</c>. The server sends the delta (what the back end wants that the device has not
    /// reported yet) whenever it changes and again each time the device connects while it is not empty, so the
    /// handler may see the same delta twice: apply it, then <see cref="ReportStateAsync"/> what now holds.
    /// Deltas are handled one at a time, in order; register before <see cref="StartAsync"/> to get the first one.
    /// </summary>
    public void OnDesiredState(Func<DesiredStateDelta, CancellationToken, Task> handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        _messages.SetDesiredHandler(handler);
        var subscribe = _mqtt.AddSubscriptionAsync(_messages.DeltaTopic, _mqtt.Stopping);
        _work.Track(ReportFailureAsync(subscribe, _messages.DeltaTopic));
    }

    /// <summary>
    /// Subscribes to <paramref name="topicFilter"/> (MQTT wildcards allowed) within this device's own topics,
    /// <c>devices/{id}/...</c>, and runs <paramref name="handler"/> for each message, one at a time, acknowledging
    /// it when the handler returns. The subscription is kept on every later connection. Connected: completes when
    /// the server granted it; offline: at once, and it is subscribed on connect.
    /// </summary>
    /// <exception cref="ArgumentException">The filter is not a valid MQTT topic filter, or reaches outside <c>devices/{id}/</c>.</exception>
    /// <exception cref="InvalidOperationException">The server refused the subscription, or 32 filters are subscribed already.</exception>
    public async Task SubscribeAsync(string topicFilter, Func<DeviceMessage, CancellationToken, Task> handler, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(topicFilter);
        ArgumentNullException.ThrowIfNull(handler);
        if (!MqttTopic.IsValidTopicFilter(topicFilter.AsSpan()))
        {
            throw new ArgumentException($"'{topicFilter}' is not a valid MQTT topic filter.", nameof(topicFilter));
        }

        // A device is granted devices/{id}/# (docs/mqtt.md); anything wider would only be refused by the server,
        // later and less clearly. The level after the prefix must exist, so "devices/{id}/#" is the widest.
        if (!topicFilter.StartsWith(_devicePrefix, StringComparison.Ordinal) || topicFilter.Length == _devicePrefix.Length)
        {
            throw new ArgumentException(
                $"'{topicFilter}' is outside this device's topics; a device may subscribe only within devices/{_deviceId}/ "
                + $"(for example devices/{_deviceId}/config/#).",
                nameof(topicFilter));
        }

        _messages.SetHandler(topicFilter, handler);
        await _mqtt.AddSubscriptionAsync(topicFilter, cancellationToken).ConfigureAwait(false);
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

        if (_messages.Wants(TopicSpan(publish.Topic, out var topicCopy)))
        {
            var topic = Encoding.UTF8.GetString(topicCopy ?? publish.Topic.FirstSpan);
            var qos = publish.QoS;
            if (qos == 2)
            {
                // QoS 2 (§4.3.3): PUBREC now, PUBCOMP on PUBREL (the core); the handler runs once per delivery.
                await connection.SendAckAsync(MqttPacketType.PubRec, publish.PacketId, connection.Closed).ConfigureAwait(false);
                qos = 0;
            }

            if (!_messages.TryQueue(connection, topic, publish.Payload.ToArray(), publish.Retain, qos, publish.PacketId))
            {
                RaiseError(
                    $"{MessageDispatcher.QueueLength} messages wait for their handlers; one on {topic} was not acknowledged "
                    + "(the server sends it again after a reconnect).",
                    null);
            }

            return null;
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

    /// <summary>The topic as one span: the frame's own when contiguous, else <paramref name="copy"/>.</summary>
    private static ReadOnlySpan<byte> TopicSpan(in ReadOnlySequence<byte> topic, out byte[]? copy)
    {
        copy = topic.IsSingleSegment ? null : topic.ToArray();
        return copy ?? topic.FirstSpan;
    }

    private static bool IsJsonObject(ReadOnlySpan<byte> utf8)
    {
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions { MaxDepth = 64 });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return false;
            }

            reader.Skip();
            return !reader.Read();
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private async Task ReportFailureAsync(Task subscribe, string filter)
    {
        try
        {
            await subscribe.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
#pragma warning disable CA1031 // Reported, never thrown into the host.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            RaiseError($"Subscribing to {filter} failed.", ex);
        }
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
