using System.Text;
using Microsoft.Extensions.Logging;
using Relay.DeviceClient.Internal;
using Relay.Protocol.Mqtt;
using Relay.Protocol.Primitives;

namespace Relay.DeviceClient;

public sealed partial class RelayDeviceClient
{
    private async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            SetState(DeviceConnectionState.Connecting, null);
            MqttConnection? connection = null;
            Exception? failure = null;
            try
            {
                connection = await EstablishAsync(stop).ConfigureAwait(false);
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

                RaiseError($"Connecting to {_options.Server} failed: {ex.Message}", ex);
            }

            if (connection is not null)
            {
                Interlocked.Increment(ref _connections);
                var reason = await RunConnectionAsync(connection, stop).ConfigureAwait(false);
                if (reason is not null && !stop.IsCancellationRequested)
                {
                    failure = new IOException(reason);
                    RaiseError(reason, null);
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

    /// <summary>Opens the transport and completes CONNECT/CONNACK, falling back from 5.0 to 3.1.1 under Auto.</summary>
    private async Task<MqttConnection> EstablishAsync(CancellationToken stop)
    {
        var version = _workingVersion ?? (_options.Protocol == MqttProtocolPreference.V311 ? MqttProtocolVersion.V311 : MqttProtocolVersion.V500);
        var (connection, outcome) = await TryConnectAsync(version, stop).ConfigureAwait(false);
        if (outcome is ConnectOutcome.UnsupportedVersion or ConnectOutcome.ClosedByServer
            && version == MqttProtocolVersion.V500
            && _options.Protocol == MqttProtocolPreference.Auto)
        {
            _logger.LogInformation("The server refused MQTT 5.0 ({Outcome}); trying 3.1.1", outcome);
            await connection.DisposeAsync().ConfigureAwait(false);
            (connection, outcome) = await TryConnectAsync(MqttProtocolVersion.V311, stop).ConfigureAwait(false);
        }

        if (outcome != ConnectOutcome.Accepted)
        {
            var code = connection.ConnAckCode;
            await connection.DisposeAsync().ConfigureAwait(false);
            throw outcome == ConnectOutcome.Refused
                ? new IOException($"The server refused the connection: CONNACK 0x{code:X2}.")
                : outcome == ConnectOutcome.ClosedByServer
                    ? new IOException("The server closed the connection before CONNACK.")
                    : new IOException("The server does not support the requested MQTT version.");
        }

        _workingVersion = connection.Version;
        return connection;
    }

    private async Task<(MqttConnection Connection, ConnectOutcome Outcome)> TryConnectAsync(MqttProtocolVersion version, CancellationToken stop)
    {
        Interlocked.Increment(ref _connectAttempts);
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stop, timeout.Token);
        Stream? stream = null;
        MqttConnection? connection = null;
        try
        {
            stream = await MqttTransport.OpenAsync(_options, linked.Token).ConfigureAwait(false);
            connection = new MqttConnection(stream, version, _options.MaxPacketSize);
            var v5 = version == MqttProtocolVersion.V500;
            var connect = new MqttConnectOptions
            {
                Version = version,
                ClientId = _options.DeviceId,
                CleanStart = false, // a persistent session: the server queues commands while the device is offline
                KeepAliveSeconds = (ushort)Math.Clamp(_options.KeepAlive.TotalSeconds, 0, ushort.MaxValue),
                Username = _options.Username ?? _options.DeviceId,
                Password = _options.Secret is null ? default : Encoding.UTF8.GetBytes(_options.Secret),
                HasPassword = _options.Secret is not null,
                SessionExpiryInterval = v5 ? (uint)Math.Clamp(_options.SessionExpiry.TotalSeconds, 0, uint.MaxValue) : null,
                ReceiveMaximum = v5 ? (ushort)MaxInflight : null,
                MaximumPacketSize = v5 ? (uint)_options.MaxPacketSize : null,
            };
            var outcome = await connection.HandshakeAsync(connect, linked.Token).ConfigureAwait(false);
            return (connection, outcome);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !stop.IsCancellationRequested)
        {
            await DisposeQuietly(connection, stream).ConfigureAwait(false);
            throw new TimeoutException($"No CONNACK within ConnectTimeout ({_options.ConnectTimeout}).");
        }
        catch
        {
            await DisposeQuietly(connection, stream).ConfigureAwait(false);
            throw;
        }
    }

    private static async ValueTask DisposeQuietly(MqttConnection? connection, Stream? stream)
    {
        if (connection is not null)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
        else if (stream is not null)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
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
        try
        {
            if (!connection.SessionPresent)
            {
                // The session is new (or lost): subscribe; otherwise the server kept our subscription.
                fault = await SubscribeAsync(connection).ConfigureAwait(false);
            }

            if (fault is null)
            {
                _connection = connection;
                SetState(DeviceConnectionState.Connected, null);
                _logger.LogInformation("Connected to {Server} with MQTT {Version} (session present: {SessionPresent})", _options.Server, connection.Version, connection.SessionPresent);
                await ResendInflightAsync(connection).ConfigureAwait(false);
                OnRendezvousAvailable();
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
        lock (_gate)
        {
            _pingResponse?.TrySetCanceled();
            _subAck?.TrySetCanceled();
        }

        if (stop.IsCancellationRequested)
        {
            return null;
        }

        reason = _closeReason ?? fault ?? reason;
        _closeReason = null;
        return reason;
    }

    private volatile string? _closeReason;

    /// <summary>Closes the connection for <paramref name="reason"/>; the loop reconnects.</summary>
    private void Fail(MqttConnection connection, string reason)
    {
        _closeReason ??= reason;
        connection.Abort();
    }

    private async Task<string?> SubscribeAsync(MqttConnection connection)
    {
        TaskCompletionSource<byte> ack;
        ushort id;
        lock (_gate)
        {
            id = AllocatePacketIdLocked();
            _subAckId = id;
            ack = new TaskCompletionSource<byte>(TaskCreationOptions.RunContinuationsAsynchronously);
            _subAck = ack;
        }

        // docs/rendezvous.md: the signalling (devices/{id}/rendezvous/in) is subscribed in the same SUBSCRIBE as the
        // commands; the first SUBACK code (the commands') decides, as a refused rendezvous filter only disables peers.
        var filter = Encoding.UTF8.GetString(_commandsTopic);
        string[] filters = _options.Peers.Enabled ? [filter, Encoding.UTF8.GetString(RendezvousInTopic)] : [filter];
        await connection.SendSubscribeAsync(id, filters, connection.Closed).ConfigureAwait(false);
        try
        {
            var granted = await ack.Task.WaitAsync(_options.OperationTimeout, _time, connection.Closed).ConfigureAwait(false);
            return granted >= 0x80 ? $"The server refused the subscription to {filter}: 0x{granted:X2}." : null;
        }
        catch (TimeoutException)
        {
            return $"No SUBACK within OperationTimeout ({_options.OperationTimeout}).";
        }
        finally
        {
            lock (_gate)
            {
                _subAckId = 0;
            }
        }
    }

    /// <summary>QoS 1 messages unacknowledged when the last connection dropped go again, with DUP, in order (§4.4).</summary>
    private async Task ResendInflightAsync(MqttConnection connection)
    {
        Inflight[] pending;
        List<Inflight> stale = [];
        lock (_gate)
        {
            // Signalling from the last connection is stale: the sessions it belonged to have timed out or will.
            foreach (var inflight in _inflight.Values.Where(static i => i.Message.Transient).ToList())
            {
                _inflight.Remove(inflight.PacketId);
                stale.Add(inflight);
            }

            pending = [.. _inflight.Values.OrderBy(static i => i.Order)];
        }

        foreach (var inflight in stale)
        {
            _inflightSlots.Release();
            inflight.Done?.TrySetException(new IOException("The connection dropped before the PUBACK."));
        }

        foreach (var inflight in pending)
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

    /// <summary>PINGREQ every KeepAlive (§3.1.2.10); no PINGRESP within OperationTimeout means the connection is dead.</summary>
    private async Task KeepAliveAsync(MqttConnection connection)
    {
        if (_options.KeepAlive <= TimeSpan.Zero)
        {
            return;
        }

        try
        {
            while (true)
            {
                await Task.Delay(_options.KeepAlive, _time, connection.Closed).ConfigureAwait(false);
                var pong = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                lock (_gate)
                {
                    _pingResponse = pong;
                }

                await connection.SendPingAsync(connection.Closed).ConfigureAwait(false);
                try
                {
                    await pong.Task.WaitAsync(_options.OperationTimeout, _time, connection.Closed).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    Fail(connection, $"No PINGRESP within OperationTimeout ({_options.OperationTimeout}): the connection is dead.");
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or System.Net.WebSockets.WebSocketException)
        {
            // The connection ended.
        }
    }

    /// <inheritdoc />
    async ValueTask<string?> IMqttPacketHandler.OnPacketAsync(MqttConnection connection, MqttFrame frame)
    {
        var version = connection.Version;
        switch (frame.Type)
        {
            case MqttPacketType.Publish:
                return await OnPublishAsync(connection, frame).ConfigureAwait(false);

            case MqttPacketType.PubAck:
            {
                if (MqttPacketReader.ReadAck(frame, version, out var ack) != MqttDecodeError.None)
                {
                    return ProtocolFault("Malformed PUBACK from the server.");
                }

                Inflight? done;
                lock (_gate)
                {
                    _inflight.Remove(ack.PacketId, out done);
                }

                if (done is not null)
                {
                    _inflightSlots.Release();
                    _queue.Complete(done.Message);
                    if ((byte)ack.ReasonCode >= 0x80)
                    {
                        RaiseError($"The server refused a PUBLISH to {Encoding.UTF8.GetString(done.Message.Topic)}: 0x{(byte)ack.ReasonCode:X2}.", null);
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

                lock (_gate)
                {
                    if (subAck.PacketId == _subAckId)
                    {
                        // The second code answers devices/{id}/rendezvous/in; a server that refused or ignored it has no rendezvous.
                        _rendezvousGranted = subAck.ReasonCodes.Length >= 2 && subAck.ReasonCodes.Slice(1, 1).FirstSpan[0] < 0x80;
                        _subAck?.TrySetResult(subAck.ReasonCodes.FirstSpan[0]);
                    }
                }

                return null;
            }

            case MqttPacketType.PingResp:
                lock (_gate)
                {
                    _pingResponse?.TrySetResult();
                }

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
