using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// The send side. Packets are written into the transport's PipeWriter under _writeLock (other sessions'
// publishes arrive on their threads); one flush loop per connection pushes them out. While a flush is
// blocked by a slow reader the connection is congested: QoS 0 messages to it are dropped and counted,
// and QoS 1/2 ones wait in the session queue behind the Receive Maximum window, so nothing grows unbounded.
internal sealed partial class MqttConnection
{
    private bool _outputCompleted;
    private bool _flushing;
    private bool _flushAgain;
    private bool _inBatch;
    private volatile bool _congested;
    private Task? _flushTask;

    /// <summary>
    /// Writes a PUBLISH (§3.3) for <paramref name="outgoing"/>. Dropped when it cannot go to this client: larger
    /// than the client's Maximum Packet Size [MQTT-3.1.2-25] or, for QoS 0, the connection is congested.
    /// Called by the session, under its lock.
    /// </summary>
    public MqttSendResult SendPublish(MqttOutgoing outgoing, bool dup)
    {
        var message = outgoing.Message;
        if (outgoing.QoS == 0 && _congested)
        {
            _metrics.Drop(MqttDropReason.ClientBackpressure);
            return MqttSendResult.Dropped;
        }

        var properties = default(MqttPublishProperties);
        if (_version == MqttProtocolVersion.V500)
        {
            MqttMessageMapper.WritePublishProperties(ref properties, outgoing, _services.Time);
        }

        var topicLength = Encoding.UTF8.GetByteCount(message.Topic);
        byte[]? rented = null;
        var topic = topicLength <= 256 ? stackalloc byte[256] : (rented = ArrayPool<byte>.Shared.Rent(topicLength));
        try
        {
            topic = topic[..Encoding.UTF8.GetBytes(message.Topic, topic)];
            lock (_writeLock)
            {
                if (_outputCompleted)
                {
                    return MqttSendResult.Closed;
                }

                var sentTopic = topic;
                var newAlias = false;
                if (_clientTopicAliasMaximum > 0)
                {
                    // MQTT 5.0 §3.3.2.3.4: aliases up to the client's Topic Alias Maximum; the first use carries the topic.
                    _outboundAliases ??= new(StringComparer.Ordinal);
                    if (_outboundAliases.TryGetValue(message.Topic, out var alias))
                    {
                        properties.TopicAlias = alias;
                        sentTopic = default;
                    }
                    else if (_outboundAliases.Count < _clientTopicAliasMaximum)
                    {
                        properties.TopicAlias = (ushort)(_outboundAliases.Count + 1);
                        newAlias = true;
                    }
                }

                var size = MqttPacketWriter.MeasurePublish(_version, sentTopic, outgoing.QoS, properties, message.Payload.Length);
                if (size > _clientMaximumPacketSize)
                {
                    // [MQTT-3.1.2-25]: never send more than the client's Maximum Packet Size; drop for this client.
                    _metrics.Drop(MqttDropReason.TooLargeForClient);
                    LogTooLargeForClient(_clientId, size, _clientMaximumPacketSize);
                    return MqttSendResult.Dropped;
                }

                if (newAlias)
                {
                    _outboundAliases![message.Topic] = properties.TopicAlias!.Value;
                }

                MqttPacketWriter.WritePublish(_output, _version, sentTopic, outgoing.QoS, outgoing.Retain, dup, outgoing.PacketId, properties, message.Payload.Span);
                _metrics.MessageOut(outgoing.QoS, message.Payload.Length);
                AfterWriteLocked();
            }

            return MqttSendResult.Sent;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    public void SendPubRel(ushort packetId) => WriteAck(MqttPacketType.PubRel, packetId, MqttReasonCode.Success);

    private void WriteAck(MqttPacketType type, ushort packetId, MqttReasonCode code, string? reason = null)
    {
        lock (_writeLock)
        {
            if (_outputCompleted)
            {
                return;
            }

            // [MQTT-3.1.2-29]: Request Problem Information 0 means no Reason String outside CONNACK and DISCONNECT.
            MqttPacketWriter.WriteAck(_output, type, _version, packetId, code, _version == MqttProtocolVersion.V500 && !_noProblemInformation ? reason : null);
            AfterWriteLocked();
        }
    }

    private void WriteSubAck(ushort packetId, ReadOnlySpan<byte> codes)
    {
        lock (_writeLock)
        {
            if (!_outputCompleted)
            {
                MqttPacketWriter.WriteSubAck(_output, _version, packetId, codes);
                AfterWriteLocked();
            }
        }
    }

    private void WriteUnsubAck(ushort packetId, ReadOnlySpan<byte> codes)
    {
        lock (_writeLock)
        {
            if (!_outputCompleted)
            {
                MqttPacketWriter.WriteUnsubAck(_output, _version, packetId, codes);
                AfterWriteLocked();
            }
        }
    }

    private void WritePingResp()
    {
        lock (_writeLock)
        {
            if (!_outputCompleted)
            {
                MqttPacketWriter.WritePingResp(_output);
                AfterWriteLocked();
            }
        }
    }

    private void WriteConnAck(MqttProtocolVersion version, bool sessionPresent, byte code, in MqttConnAckProperties properties)
    {
        lock (_writeLock)
        {
            if (!_outputCompleted)
            {
                MqttPacketWriter.WriteConnAck(_output, version, sessionPresent, code, properties);
                AfterWriteLocked();
            }
        }
    }

    /// <summary>v5 only (§3.14): the server tells why it closes.</summary>
    private void WriteDisconnect(MqttReasonCode code, string? reason)
    {
        lock (_writeLock)
        {
            if (!_outputCompleted)
            {
                MqttPacketWriter.WriteDisconnect(_output, MqttProtocolVersion.V500, code, reason);
                AfterWriteLocked();
            }
        }
    }

    private void BeginBatch()
    {
        lock (_writeLock)
        {
            _inBatch = true;
        }
    }

    private void EndBatch()
    {
        lock (_writeLock)
        {
            _inBatch = false;
            if (_flushAgain || _output.UnflushedBytes > 0)
            {
                StartFlushLocked();
            }
        }
    }

    // The read loop flushes once per batch; writes from other threads flush at once.
    private void AfterWriteLocked()
    {
        if (!_inBatch)
        {
            StartFlushLocked();
        }
        else
        {
            _flushAgain = true;
        }
    }

    private void StartFlushLocked()
    {
        if (_flushing)
        {
            _flushAgain = true;
            return;
        }

        _flushing = true;
        _flushAgain = false;
        var flush = _output.FlushAsync();
        if (flush.IsCompletedSuccessfully)
        {
            _flushing = false;
            if (flush.Result.IsCompleted)
            {
                _outputCompleted = true;
            }

            return;
        }

        _congested = true;
        _flushTask = FinishFlushAsync(flush);
    }

    private async Task FinishFlushAsync(ValueTask<FlushResult> pending)
    {
        while (true)
        {
            FlushResult result;
            try
            {
                result = await pending.ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException)
            {
                result = new FlushResult(isCanceled: false, isCompleted: true);
            }

            lock (_writeLock)
            {
                if (result.IsCompleted || _outputCompleted)
                {
                    _outputCompleted = true;
                    _flushing = false;
                    _congested = false;
                    return;
                }

                if (!_flushAgain)
                {
                    _flushing = false;
                    _congested = false;
                    return;
                }

                _flushAgain = false;
                pending = _output.FlushAsync();
            }
        }
    }

    /// <summary>True once the connection is closing: a session should keep its messages rather than send them here.</summary>
    public bool IsClosing
    {
        get
        {
            lock (_writeLock)
            {
                return _outputCompleted;
            }
        }
    }

    /// <summary>Waits (bounded) for a flush in progress, so a final DISCONNECT reaches the socket before the pipe completes.</summary>
    public async ValueTask DrainAsync()
    {
        Task? pending;
        lock (_writeLock)
        {
            pending = _flushing ? _flushTask : null;
            _outputCompleted = true;
        }

        if (pending is not null)
        {
            await pending.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }
    }

    [LoggerMessage(EventId = 5110, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: dropped a {Size} B PUBLISH above its Maximum Packet Size {Maximum} [MQTT-3.1.2-25]")]
    private partial void LogTooLargeForClient(string? clientId, long size, uint maximum);
}
