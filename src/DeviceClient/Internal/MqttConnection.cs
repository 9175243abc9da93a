using System.Buffers;
using System.IO.Pipelines;
using Relay.Protocol.Mqtt;

namespace Relay.DeviceClient.Internal;

/// <summary>How a CONNECT attempt ended.</summary>
internal enum ConnectOutcome
{
    Accepted,
    Refused,
    UnsupportedVersion,
    ClosedByServer,
}

/// <summary>The client's side of one MQTT connection after CONNACK.</summary>
internal interface IMqttPacketHandler
{
    /// <summary>
    /// One packet from the server. <paramref name="frame"/> is a view valid only until the first await;
    /// returns a fault message to close the connection, or null.
    /// </summary>
    ValueTask<string?> OnPacketAsync(MqttConnection connection, MqttFrame frame);
}

/// <summary>
/// One transport connection: a PipeReader over the stream framed by <see cref="MqttFrameReader"/> with the
/// configured packet size limit, and a PipeWriter behind a single writer lock. Closing is idempotent.
/// </summary>
internal sealed class MqttConnection : IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly PipeReader _reader;
    private readonly PipeWriter _writer;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly CancellationTokenSource _closed = new();
    private readonly int _maxPacketSize;
    private int _disposed;

    public MqttConnection(Stream stream, MqttProtocolVersion version, int maxPacketSize)
    {
        _stream = stream;
        Version = version;
        _maxPacketSize = maxPacketSize;
        _reader = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 4096, minimumReadSize: 1024));
        _writer = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
    }

    public MqttProtocolVersion Version { get; }

    public bool SessionPresent { get; private set; }

    public byte ConnAckCode { get; private set; }

    /// <summary>The server's Receive Maximum (MQTT 5 §3.2.2.3.3); 65,535 when it sent none.</summary>
    public int ServerReceiveMaximum { get; private set; } = ushort.MaxValue;

    /// <summary>True when the read loop ended on a frame that could not be framed (malformed or oversized).</summary>
    public bool ProtocolViolation { get; private set; }

    /// <summary>Canceled when the connection closes for any reason.</summary>
    public CancellationToken Closed => _closed.Token;

    /// <summary>
    /// Sends CONNECT and waits for CONNACK (§3.1, §3.2). "The first packet sent from the Server to the Client
    /// MUST be a CONNACK" ([MQTT-3.2.0-1]); anything else is a protocol error.
    /// </summary>
    public async Task<ConnectOutcome> HandshakeAsync(MqttConnectOptions connect, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            MqttPacketWriter.WriteConnect(_writer, connect);
            await _writer.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }

        while (true)
        {
            ReadResult result;
            try
            {
                result = await _reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException) when (Version == MqttProtocolVersion.V500)
            {
                // A 3.1.1-only server may reset the connection on a level-5 CONNECT ([MQTT-3.1.2-2]).
                return ConnectOutcome.ClosedByServer;
            }

            var buffer = result.Buffer;
            try
            {
                if (!buffer.IsEmpty)
                {
                    if (Version == MqttProtocolVersion.V500 && LooksLikeV311Refusal(buffer))
                    {
                        // A 3.1.1 server answers a level it does not support with the 3.1.1 CONNACK 0x01
                        // "unacceptable protocol version" ([MQTT-3.1.2-2]): 20 02 00 01.
                        return ConnectOutcome.UnsupportedVersion;
                    }

                    var status = MqttFrameReader.TryRead(ref buffer, _maxPacketSize, out var frame, out var error);
                    if (status == OperationStatus.InvalidData)
                    {
                        throw new MqttProtocolException($"Malformed packet from the server while waiting for CONNACK: {error}.");
                    }

                    if (status == OperationStatus.Done)
                    {
                        if (frame.Type != MqttPacketType.ConnAck)
                        {
                            throw new MqttProtocolException($"The server sent {frame.Type} before CONNACK ([MQTT-3.2.0-1]).");
                        }

                        var decode = MqttPacketReader.ReadConnAck(frame, Version, out var connAck);
                        if (decode != MqttDecodeError.None)
                        {
                            throw new MqttProtocolException($"Bad CONNACK from the server: {decode}.");
                        }

                        ConnAckCode = connAck.ReasonCode;
                        SessionPresent = connAck.SessionPresent;
                        if (connAck.Properties.ReceiveMaximum is { } receiveMaximum)
                        {
                            ServerReceiveMaximum = receiveMaximum;
                        }

                        if (connAck.ReasonCode == 0)
                        {
                            return ConnectOutcome.Accepted;
                        }

                        // v5 0x84 Unsupported Protocol Version (§3.2.2.2); v3.1.1 return code 0x01 (§3.2.2.3).
                        return connAck.ReasonCode == (Version == MqttProtocolVersion.V500 ? 0x84 : 0x01)
                            ? ConnectOutcome.UnsupportedVersion
                            : ConnectOutcome.Refused;
                    }
                }

                if (result.IsCompleted)
                {
                    return ConnectOutcome.ClosedByServer;
                }
            }
            finally
            {
                _reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }
    }

    private static bool LooksLikeV311Refusal(ReadOnlySequence<byte> buffer)
    {
        if (buffer.Length < 4)
        {
            return false;
        }

        Span<byte> head = stackalloc byte[4];
        buffer.Slice(0, 4).CopyTo(head);
        return head[0] == 0x20 && head[1] == 0x02 && head[2] == 0x00 && head[3] == 0x01;
    }

    /// <summary>
    /// Kestrel's read loop: drains every complete frame of one read, advances in finally, and treats bytes
    /// left over at completion as a truncated packet. Returns why the connection ended.
    /// </summary>
    public async Task<string> RunReadLoopAsync(IMqttPacketHandler handler)
    {
        try
        {
            while (true)
            {
                var result = await _reader.ReadAsync(Closed).ConfigureAwait(false);
                var buffer = result.Buffer;
                try
                {
                    while (true)
                    {
                        var status = MqttFrameReader.TryRead(ref buffer, _maxPacketSize, out var frame, out var error);
                        if (status == OperationStatus.NeedMoreData)
                        {
                            break;
                        }

                        if (status == OperationStatus.InvalidData)
                        {
                            ProtocolViolation = true;
                            return error == MqttDecodeError.PacketTooLarge
                                ? $"The server sent a packet larger than MaxPacketSize ({_maxPacketSize} bytes)."
                                : $"Malformed packet from the server: {error}.";
                        }

                        var fault = await handler.OnPacketAsync(this, frame).ConfigureAwait(false);
                        if (fault is not null)
                        {
                            return fault;
                        }
                    }

                    if (result.IsCompleted)
                    {
                        return buffer.IsEmpty ? "The server closed the connection." : "The server closed the connection in the middle of a packet.";
                    }
                }
                finally
                {
                    _reader.AdvanceTo(buffer.Start, buffer.End);
                }
            }
        }
        catch (OperationCanceledException) when (Closed.IsCancellationRequested)
        {
            return "The connection was closed.";
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or System.Net.WebSockets.WebSocketException or InvalidOperationException)
        {
            return "The connection failed: " + ex.Message;
        }
    }

    public ValueTask SendPublishAsync(byte[] topicUtf8, ReadOnlyMemory<byte> payload, byte qos, bool retain, bool dup, ushort packetId, byte[]? correlationData, string? contentType, CancellationToken cancellationToken)
    {
        var properties = default(MqttPublishProperties);
        if (Version == MqttProtocolVersion.V500 && correlationData is not null)
        {
            properties.CorrelationData = correlationData;
            properties.HasCorrelationData = true;
        }

        if (Version == MqttProtocolVersion.V500 && contentType is not null)
        {
            properties.ContentType = contentType;
        }

        return SendAsync(new PublishPacket(topicUtf8, payload, qos, retain, dup, packetId, properties), Version, cancellationToken);
    }

    public ValueTask SendAckAsync(MqttPacketType type, ushort packetId, CancellationToken cancellationToken) =>
        SendAsync(new AckPacket(type, packetId), Version, cancellationToken);

    /// <summary>Acknowledges an incoming PUBLISH: a PUBACK at QoS 1 (§4.3.2); QoS 0 has none.</summary>
    public async ValueTask AcknowledgeAsync(byte qos, ushort packetId)
    {
        if (qos == 1)
        {
            await SendAckAsync(MqttPacketType.PubAck, packetId, Closed).ConfigureAwait(false);
        }
    }

    public ValueTask SendPingAsync(CancellationToken cancellationToken) => SendAsync(new PingPacket(), Version, cancellationToken);

    public ValueTask SendSubscribeAsync(ushort packetId, string filter, CancellationToken cancellationToken) =>
        SendAsync(new SubscribePacket(packetId, [filter]), Version, cancellationToken);

    /// <summary>One SUBSCRIBE with several filters at QoS 1 (§3.8.3); the SUBACK has a code per filter, in order.</summary>
    public ValueTask SendSubscribeAsync(ushort packetId, string[] filters, CancellationToken cancellationToken) =>
        SendAsync(new SubscribePacket(packetId, filters), Version, cancellationToken);

    public ValueTask SendDisconnectAsync(CancellationToken cancellationToken) => SendAsync(new DisconnectPacket(), Version, cancellationToken);

    private async ValueTask SendAsync<TPacket>(TPacket packet, MqttProtocolVersion version, CancellationToken cancellationToken)
        where TPacket : struct, IOutgoingPacket
    {
        ObjectDisposedException.ThrowIf(Closed.IsCancellationRequested, this);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, Closed);
        await _writeLock.WaitAsync(linked.Token).ConfigureAwait(false);
        try
        {
            packet.Write(_writer, version);
            var flush = await _writer.FlushAsync(linked.Token).ConfigureAwait(false);
            if (flush.IsCompleted)
            {
                throw new IOException("The connection is closed.");
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // A half-written packet leaves the stream unusable: close it.
            Abort();
            throw;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Closes the connection without a DISCONNECT (the read loop then ends).</summary>
    public void Abort()
    {
        try
        {
            _closed.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Abort();
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            await _writer.CompleteAsync().ConfigureAwait(false);
            await _reader.CompleteAsync().ConfigureAwait(false);
            await _stream.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or System.Net.WebSockets.WebSocketException or OperationCanceledException)
        {
            // Closing a broken stream may fail; it is closed all the same.
        }
        finally
        {
            _writeLock.Release();
            _closed.Dispose();
        }
    }

    private interface IOutgoingPacket
    {
        void Write(IBufferWriter<byte> writer, MqttProtocolVersion version);
    }

    private readonly struct PublishPacket(byte[] topic, ReadOnlyMemory<byte> payload, byte qos, bool retain, bool dup, ushort packetId, MqttPublishProperties properties) : IOutgoingPacket
    {
        public void Write(IBufferWriter<byte> writer, MqttProtocolVersion version) =>
            MqttPacketWriter.WritePublish(writer, version, topic, qos, retain, dup, packetId, properties, payload.Span);
    }

    private readonly struct AckPacket(MqttPacketType type, ushort packetId) : IOutgoingPacket
    {
        public void Write(IBufferWriter<byte> writer, MqttProtocolVersion version) =>
            MqttPacketWriter.WriteAck(writer, type, version, packetId, MqttReasonCode.Success);
    }

    private readonly struct PingPacket : IOutgoingPacket
    {
        public void Write(IBufferWriter<byte> writer, MqttProtocolVersion version) => MqttPacketWriter.WritePingReq(writer);
    }

    private readonly struct SubscribePacket(ushort packetId, string[] filters) : IOutgoingPacket
    {
        public void Write(IBufferWriter<byte> writer, MqttProtocolVersion version) =>
            MqttPacketWriter.WriteSubscribe(writer, version, packetId, [.. filters.Select(static f => new MqttSubscriptionRequest { TopicFilter = f, MaximumQoS = 1 })]);
    }

    private readonly struct DisconnectPacket : IOutgoingPacket
    {
        public void Write(IBufferWriter<byte> writer, MqttProtocolVersion version) =>
            MqttPacketWriter.WriteDisconnect(writer, version, MqttReasonCode.Success);
    }
}

/// <summary>The server broke the protocol; the connection is closed and the client reconnects.</summary>
internal sealed class MqttProtocolException(string message) : Exception(message);
