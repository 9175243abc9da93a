using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// The send side. Packets are written into the transport's PipeWriter under _writeLock (other sessions'
// publishes arrive on their threads); one flush loop per connection pushes them out. While a flush is
// blocked by a slow reader the connection is congested: QoS 0 messages to it are dropped and counted,
// and QoS 1/2 ones wait in the session queue behind the Receive Maximum window.
// What the client itself makes us answer (PUBACK, PINGRESP, SUBACK...) cannot be dropped, so the output it
// leaves unread is counted and capped by Relay:Mqtt:MaxPendingOutputBytes (review H3): a packet that must go
// and does not fit ends the connection (v5 DISCONNECT 0x97 Quota exceeded) instead of growing the buffer.
internal sealed partial class MqttConnection
{
    private bool _outputCompleted;
    private bool _flushing;
    private bool _flushAgain;
    private bool _inBatch;
    private volatile bool _congested;
    private Task? _flushTask;

    // Output accounting, under _writeLock. Every byte flushed to the transport is added to _flushedTotal; a
    // flush that completes proves the transport took what was flushed before it was issued (it is back under
    // its own small threshold), so unread output is at most _flushedTotal - _drainedMark plus what is written
    // and not yet flushed, plus the transport's threshold (64 KiB).
    private long _flushedTotal;
    private long _flushMark;
    private long _drainedMark;
    private long _reportedPending;
    private bool _outputLimitHit;

    // TickCount64 since which QoS 0 messages have been dropped for being over the limit; 0 while under.
    private long _overLimitSince;

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

                if (PendingOutputLocked > _options.MaxPendingOutputBytes)
                {
                    if (outgoing.QoS == 0)
                    {
                        _metrics.Drop(MqttDropReason.ClientBackpressure);
                        if (_overLimitSince == 0)
                        {
                            Volatile.Write(ref _overLimitSince, Math.Max(1, Environment.TickCount64));
                        }

                        return MqttSendResult.Dropped;
                    }

                    // A QoS 1/2 message cannot progress: it stays with the session and the connection ends.
                    OutputLimitLocked();
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
                    if (_logger.IsEnabled(LogLevel.Debug))
                    {
                        LogTooLargeForClient(Primitives.LogText.Safe(_clientId), size, _clientMaximumPacketSize);
                    }
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
            if (_outputCompleted || !HasRoomLocked())
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
            if (!_outputCompleted && HasRoomLocked())
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
            if (!_outputCompleted && HasRoomLocked())
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
            if (!_outputCompleted && HasRoomLocked())
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
        var flush = FlushLocked();
        if (flush.IsCompletedSuccessfully)
        {
            _flushing = false;
            DrainedLocked(_flushMark);
            if (flush.Result.IsCompleted)
            {
                _outputCompleted = true;
            }

            return;
        }

        _congested = true;
        _flushTask = FinishFlushAsync(flush, _flushMark);
    }

    /// <summary>Unread output: flushed since the last completed flush was issued, plus written and not flushed.</summary>
    private long PendingOutputLocked => _flushedTotal - _drainedMark + _output.UnflushedBytes;

    private ValueTask<FlushResult> FlushLocked()
    {
        _flushedTotal += _output.UnflushedBytes;
        _flushMark = _flushedTotal;
        var flush = _output.FlushAsync();
        ReportPendingLocked();
        return flush;
    }

    // A flush issued at mark completed: the transport has taken everything flushed before it.
    private void DrainedLocked(long mark)
    {
        _drainedMark = Math.Max(_drainedMark, mark);
        ReportPendingLocked();
        if (_overLimitSince != 0 && PendingOutputLocked <= _options.MaxPendingOutputBytes)
        {
            Volatile.Write(ref _overLimitSince, 0);
        }
    }

    private void ReportPendingLocked()
    {
        var pending = _flushedTotal - _drainedMark;
        var delta = pending - _reportedPending;
        if (delta != 0)
        {
            _reportedPending = pending;
            _metrics.PendingOutput(delta, pending);
        }
    }

    /// <summary>
    /// True when a packet that must be sent may be written; false (and the connection ending) when the client
    /// has left more than Relay:Mqtt:MaxPendingOutputBytes unread.
    /// </summary>
    private bool HasRoomLocked()
    {
        if (PendingOutputLocked <= _options.MaxPendingOutputBytes)
        {
            return true;
        }

        OutputLimitLocked();
        return false;
    }

    private void OutputLimitLocked()
    {
        if (_outputLimitHit)
        {
            return;
        }

        _outputLimitHit = true;
        _metrics.LimitHit(MqttLimit.PendingOutput);
        _services.ClientLog.PendingOutput(_clientId, _remote, PendingOutputLocked, _options.MaxPendingOutputBytes);

        // Not under this lock: ending cancels the read loop, whose continuation may run inline.
        ThreadPool.UnsafeQueueUserWorkItem(static connection => connection.RequestEnd(MqttEndReason.LimitExceeded, MqttReasonCode.QuotaExceeded), this, preferLocal: false);
    }

    /// <summary>Called by the sweep: QoS 0 has been dropped for being over the limit for longer than <paramref name="graceMilliseconds"/>.</summary>
    private bool OverOutputLimitFor(long now, long graceMilliseconds)
    {
        var since = Volatile.Read(ref _overLimitSince);
        return since != 0 && now - since > graceMilliseconds;
    }

    private void EndForStuckOutput()
    {
        lock (_writeLock)
        {
            OutputLimitLocked();
        }
    }

    private async Task FinishFlushAsync(ValueTask<FlushResult> pending, long mark)
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
                DrainedLocked(mark);
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
                pending = FlushLocked();
                mark = _flushMark;
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

        lock (_writeLock)
        {
            // The transport now owns (or drops) what is left; it no longer counts against this server's total.
            _metrics.PendingOutput(-_reportedPending, 0);
            _reportedPending = 0;
            _drainedMark = _flushedTotal;
        }
    }

    [LoggerMessage(EventId = 5110, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: dropped a {Size} B PUBLISH above its Maximum Packet Size {Maximum} [MQTT-3.1.2-25]")]
    private partial void LogTooLargeForClient(string clientId, long size, uint maximum);
}
