using System.Buffers;
using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// The send side: packets written through MqttConnectionOutput (its lock, its flush loop, its cap on unread
// output). QoS 0 to a congested client is dropped and counted; QoS 1/2 waits in the session queue behind
// the Receive Maximum window.
internal sealed partial class MqttConnection
{
    /// <summary>
    /// Writes a PUBLISH (§3.3) for <paramref name="outgoing"/>. Dropped when it cannot go to this client: larger
    /// than the client's Maximum Packet Size [MQTT-3.1.2-25] or, for QoS 0, the connection is congested.
    /// Called by the session, under its lock.
    /// </summary>
    public MqttSendResult SendPublish(MqttOutgoing outgoing, bool dup)
    {
        var message = outgoing.Message;
        if (outgoing.QoS == 0 && _out.Congested)
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
            lock (_out.Gate)
            {
                if (_out.CompletedLocked)
                {
                    return MqttSendResult.Closed;
                }

                if (!_out.MayPublishLocked(outgoing.QoS, out var dropped))
                {
                    // Over the unread-output cap: QoS 0 is dropped; QoS 1/2 stays with the session and the connection ends.
                    if (dropped)
                    {
                        _metrics.Drop(MqttDropReason.ClientBackpressure);
                        return MqttSendResult.Dropped;
                    }

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

                MqttPacketWriter.WritePublish(_out.Writer, _version, sentTopic, outgoing.QoS, outgoing.Retain, dup, outgoing.PacketId, properties, message.Payload.Span);
                _metrics.MessageOut(outgoing.QoS, message.Payload.Length);
                _out.AfterWriteLocked();
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
        lock (_out.Gate)
        {
            if (_out.CompletedLocked || !_out.HasRoomLocked())
            {
                return;
            }

            // [MQTT-3.1.2-29]: Request Problem Information 0 means no Reason String outside CONNACK and DISCONNECT.
            MqttPacketWriter.WriteAck(_out.Writer, type, _version, packetId, code, _version == MqttProtocolVersion.V500 && !_noProblemInformation ? reason : null);
            _out.AfterWriteLocked();
        }
    }

    private void WriteSubAck(ushort packetId, ReadOnlySpan<byte> codes)
    {
        lock (_out.Gate)
        {
            if (!_out.CompletedLocked && _out.HasRoomLocked())
            {
                MqttPacketWriter.WriteSubAck(_out.Writer, _version, packetId, codes);
                _out.AfterWriteLocked();
            }
        }
    }

    private void WriteUnsubAck(ushort packetId, ReadOnlySpan<byte> codes)
    {
        lock (_out.Gate)
        {
            if (!_out.CompletedLocked && _out.HasRoomLocked())
            {
                MqttPacketWriter.WriteUnsubAck(_out.Writer, _version, packetId, codes);
                _out.AfterWriteLocked();
            }
        }
    }

    private void WritePingResp()
    {
        lock (_out.Gate)
        {
            if (!_out.CompletedLocked && _out.HasRoomLocked())
            {
                MqttPacketWriter.WritePingResp(_out.Writer);
                _out.AfterWriteLocked();
            }
        }
    }

    private void WriteConnAck(MqttProtocolVersion version, bool sessionPresent, byte code, in MqttConnAckProperties properties)
    {
        lock (_out.Gate)
        {
            if (!_out.CompletedLocked)
            {
                MqttPacketWriter.WriteConnAck(_out.Writer, version, sessionPresent, code, properties);
                _out.AfterWriteLocked();
            }
        }
    }

    /// <summary>v5 only (§3.14): the server tells why it closes.</summary>
    private void WriteDisconnect(MqttReasonCode code, string? reason)
    {
        lock (_out.Gate)
        {
            if (!_out.CompletedLocked)
            {
                MqttPacketWriter.WriteDisconnect(_out.Writer, MqttProtocolVersion.V500, code, reason);
                _out.AfterWriteLocked();
            }
        }
    }

    /// <summary>True once the connection is closing: a session should keep its messages rather than send them here.</summary>
    public bool IsClosing => _out.IsCompleted;

    /// <summary>The client left more than Relay:Mqtt:MaxPendingOutputBytes unread and something had to go: count, log, end.</summary>
    private void OutputLimitHit(long pending)
    {
        _metrics.LimitHit(MqttLimit.PendingOutput);
        _services.ClientLog.PendingOutput(_clientId, _remote, pending, _options.MaxPendingOutputBytes);

        // Not under the output's lock: ending cancels the read loop, whose continuation may run inline.
        ThreadPool.UnsafeQueueUserWorkItem(
            static connection => connection.RequestEnd(MqttEndReason.LimitExceeded, MqttReasonCode.QuotaExceeded),
            this,
            preferLocal: false);
    }

    [LoggerMessage(EventId = 5110, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: dropped a {Size} B PUBLISH above its Maximum Packet Size {Maximum} [MQTT-3.1.2-25]")]
    private partial void LogTooLargeForClient(string clientId, long size, uint maximum);
}
