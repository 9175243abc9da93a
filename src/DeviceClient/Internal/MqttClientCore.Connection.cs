using System.Text;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;
using Relay.Protocol.Primitives;

namespace Relay.DeviceClient.Internal;

/// <summary>The connect loop, the tasks that live as long as one connection, and the packets the server sends.</summary>
internal sealed partial class MqttClientCore
{
    private volatile string? _closeReason;

    private async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            SetState(DeviceConnectionState.Connecting, null);
            MqttConnection? connection = null;
            Exception? failure = null;
            try
            {
                connection = await _connector.ConnectAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                break;
            }
#pragma warning disable CA1031 // Every connect failure is reported and retried; none reaches the host.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failure = ex;
                if (ex is MqttProtocolException)
                {
                    Interlocked.Increment(ref _protocolErrors);
                }

                _owner.OnError($"Connecting to {_options.Server} failed: {ex.Message}", ex);
            }

            if (connection is not null)
            {
                Interlocked.Increment(ref _connections);
                var reason = await RunConnectionAsync(connection, stop).ConfigureAwait(false);
                if (reason is not null && !stop.IsCancellationRequested)
                {
                    failure = new IOException(reason);
                    _owner.OnError(reason, null);
                }
            }

            SetState(DeviceConnectionState.Disconnected, failure);
            if (stop.IsCancellationRequested)
            {
                break;
            }

            var delay = _backoff.NextDelay();
            _logger.LogInformation("Reconnecting in {Delay} (attempt {Attempt})", delay, _backoff.Attempt);
            try
            {
                await Task.Delay(delay, _time, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    /// <summary>Runs one accepted connection until it ends; returns why (null for a stop).</summary>
    private async Task<string?> RunConnectionAsync(MqttConnection connection, CancellationToken stop)
    {
        _backoff.OnConnected();
        using var stopRegistration = stop.Register(connection.Abort);
        var readLoop = connection.RunReadLoopAsync(this);
        string? fault = null;
        Task drain = Task.CompletedTask;
        Task keepAlive = Task.CompletedTask;
        InflightMessage[] resends = [];
        try
        {
            if (!connection.SessionPresent)
            {
                // The session is new (or lost): subscribe; otherwise the server kept our subscriptions.
                fault = await _subscriptions.SubscribeAsync(connection).ConfigureAwait(false);
            }

            if (fault is null)
            {
                // What to resend is settled before publishers can see the connection: a message published from
                // then on goes out once, fresh, and is not also resent as a duplicate on the same connection.
                resends = _inflight.TakeResends();
                _connection = connection;

                // After the connection is visible: a filter added from now on is subscribed by its own caller,
                // one added before by this (both are serialized, and the second finds nothing missing).
                fault = await SubscribeAddedAsync(connection).ConfigureAwait(false);
            }

            if (fault is null)
            {
                SetState(DeviceConnectionState.Connected, null);
                _logger.LogInformation("Connected to {Server} with MQTT {Version} (session present: {SessionPresent})", _options.Server, connection.Version, connection.SessionPresent);
                await ResendAsync(connection, resends).ConfigureAwait(false);
                _owner.OnConnected();
                drain = DrainAsync(connection);
                keepAlive = KeepAliveAsync(connection);
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or System.Net.WebSockets.WebSocketException)
        {
            fault = connection.Closed.IsCancellationRequested ? null : ex.Message;
        }

        if (fault is not null)
        {
            connection.Abort();
        }

        var reason = await readLoop.ConfigureAwait(false);
        connection.Abort();
        if (connection.ProtocolViolation)
        {
            Interlocked.Increment(ref _protocolErrors);
        }

        _connection = null;
        await Task.WhenAll(drain, keepAlive).ConfigureAwait(false);
        await connection.DisposeAsync().ConfigureAwait(false);
        _backoff.OnDisconnected();
        _keepAlive.Cancel();
        _subscriptions.Cancel();

        if (stop.IsCancellationRequested)
        {
            return null;
        }

        reason = _closeReason ?? fault ?? reason;
        _closeReason = null;
        return reason;
    }

    /// <summary>Subscribes the added filters the session lacks; a refusal is reported, a lost connection returned as a fault.</summary>
    private async Task<string?> SubscribeAddedAsync(MqttConnection connection)
    {
        var (refused, fault) = await _subscriptions.SubscribeAddedAsync(connection).ConfigureAwait(false);
        foreach (var (filter, code) in refused)
        {
            _owner.OnError($"The server refused the subscription to {filter}: 0x{code:X2}.", null);
        }

        return fault;
    }

    /// <summary>Closes the connection for <paramref name="reason"/>; the loop reconnects.</summary>
    private void Fail(MqttConnection connection, string reason)
    {
        _closeReason ??= reason;
        connection.Abort();
    }

    /// <summary>QoS 1 messages unacknowledged when the last connection dropped go again, with DUP, in order (§4.4, §4.6).</summary>
    private async Task ResendAsync(MqttConnection connection, InflightMessage[] resends)
    {
        foreach (var inflight in resends)
        {
            var m = inflight.Message;
            await connection.SendPublishAsync(m.Topic, m.Payload, 1, m.Retain, dup: true, inflight.PacketId, m.CorrelationData, m.ContentType, connection.Closed).ConfigureAwait(false);
            Interlocked.Increment(ref _published);
            Interlocked.Increment(ref _resent);
        }
    }

    /// <summary>Sends the offline queue at DrainRatePerSecond while this connection lives.</summary>
    private async Task DrainAsync(MqttConnection connection)
    {
        var rate = _options.OfflineQueue.DrainRatePerSecond;
        var bucket = rate > 0 ? new TokenBucket(1, rate, _time) : null;
        try
        {
            while (!connection.Closed.IsCancellationRequested)
            {
                if (!_queue.TryPeek(out _))
                {
                    await _queue.Available.WaitAsync(connection.Closed).ConfigureAwait(false);
                    continue;
                }

                if (bucket is not null)
                {
                    await bucket.TakeAsync(connection.Closed).ConfigureAwait(false);
                }

                var message = _queue.TryDequeue();
                if (message is not null)
                {
                    await SendAsync(connection, message, waitForAck: false, connection.Closed).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or System.Net.WebSockets.WebSocketException)
        {
            // The connection ended; what was taken is in flight and is resent after the reconnect.
        }
    }

    private async Task KeepAliveAsync(MqttConnection connection)
    {
        var dead = await _keepAlive.RunAsync(connection.SendPingAsync, connection.Closed).ConfigureAwait(false);
        if (dead is not null)
        {
            Fail(connection, dead);
        }
    }

    /// <inheritdoc />
    async ValueTask<string?> IMqttPacketHandler.OnPacketAsync(MqttConnection connection, MqttFrame frame)
    {
        var version = connection.Version;
        switch (frame.Type)
        {
            case MqttPacketType.Publish:
            {
                var decode = MqttPacketReader.ReadPublish(frame, version, out var publish);
                if (decode != MqttDecodeError.None)
                {
                    return ProtocolFault($"Bad PUBLISH from the server: {decode}.");
                }

                var fault = await _owner.OnPublishAsync(connection, publish).ConfigureAwait(false);
                return fault is null ? null : ProtocolFault(fault);
            }

            case MqttPacketType.PubAck:
            {
                if (MqttPacketReader.ReadAck(frame, version, out var ack) != MqttDecodeError.None)
                {
                    return ProtocolFault("Malformed PUBACK from the server.");
                }

                var done = _inflight.Acknowledge(ack.PacketId);
                if (done is not null)
                {
                    _queue.Complete(done.Message);
                    if ((byte)ack.ReasonCode >= 0x80)
                    {
                        _owner.OnError($"The server refused a PUBLISH to {Encoding.UTF8.GetString(done.Message.Topic)}: 0x{(byte)ack.ReasonCode:X2}.", null);
                        done.Done?.TrySetException(new IOException($"PUBACK 0x{(byte)ack.ReasonCode:X2}"));
                    }
                    else
                    {
                        done.Done?.TrySetResult();
                    }
                }

                return null;
            }

            case MqttPacketType.SubAck:
            {
                if (MqttPacketReader.ReadSubAck(frame, version, out var subAck) != MqttDecodeError.None || subAck.ReasonCodes.IsEmpty)
                {
                    return ProtocolFault("Malformed SUBACK from the server.");
                }

                _subscriptions.OnSubAck(subAck);
                return null;
            }

            case MqttPacketType.PingResp:
                _keepAlive.OnPingResponse();
                return null;

            case MqttPacketType.PubRel:
            {
                // QoS 2 inbound (§4.3.3): PUBREC was sent when the PUBLISH arrived; PUBCOMP ends it.
                if (MqttPacketReader.ReadAck(frame, version, out var rel) != MqttDecodeError.None)
                {
                    return ProtocolFault("Malformed PUBREL from the server.");
                }

                await connection.SendAckAsync(MqttPacketType.PubComp, rel.PacketId, connection.Closed).ConfigureAwait(false);
                return null;
            }

            case MqttPacketType.Disconnect:
            {
                if (version == MqttProtocolVersion.V500 && MqttPacketReader.ReadDisconnect(frame, version, out var disconnect) == MqttDecodeError.None)
                {
                    // 0x8E is the one an operator most needs explained: two processes share this device id and
                    // keep taking the session from each other (the backoff slows that down, it cannot end it).
                    return disconnect.ReasonCode == MqttReasonCode.SessionTakenOver
                        ? $"The server sent DISCONNECT 0x8E (session taken over): another connection uses client id \"{_options.DeviceId}\"; is the device running twice?"
                        : $"The server sent DISCONNECT 0x{(byte)disconnect.ReasonCode:X2}.";
                }

                return version == MqttProtocolVersion.V500 ? ProtocolFault("Malformed DISCONNECT from the server.") : ProtocolFault("A 3.1.1 server sent DISCONNECT, which only clients send.");
            }

            case MqttPacketType.UnsubAck:
            case MqttPacketType.PubRec:
            case MqttPacketType.PubComp:
                // We send no UNSUBSCRIBE and no QoS 2 PUBLISH; an ack for one is ignored rather than fatal.
                return null;

            default:
                return ProtocolFault($"The server sent {frame.Type}, which a server never sends to a client.");
        }
    }

    private string ProtocolFault(string message)
    {
        Interlocked.Increment(ref _protocolErrors);
        return message;
    }
}
