namespace Relay.Server.Mqtt;

// The delivery pump (MQTT 5.0 §4.3, §4.4, §4.9): messages go to the connection while the client's Receive
// Maximum allows, wait in a bounded queue otherwise, are resent after a reconnect, and leave on their
// acknowledgement; plus the inbound QoS 2 packet ids between PUBREC and PUBREL. Everything under the lock.
internal sealed partial class MqttSession
{
    private MqttOutbox? _outbox;
    private HashSet<ushort>? _inboundQoS2;

    // The attached connection has had its CONNACK and what the session kept (Resume): new messages may go
    // to it. Until then they queue, so the CONNACK is always the first packet it sends [MQTT-3.2.0-1].
    private bool _resumed;

    /// <summary>QoS 1/2 messages in flight (sent, not yet acknowledged) and queued behind the send window.</summary>
    public (int Inflight, int Queued) Pending
    {
        get
        {
            lock (_sync)
            {
                return (InflightCountLocked, QueuedCountLocked);
            }
        }
    }

    private MqttOutbox Outbox => _outbox ??= new();

    private int InflightCountLocked => _outbox?.InflightCount ?? 0;

    private int QueuedCountLocked => _outbox?.QueuedCount ?? 0;

    /// <summary>A routed message for this session: sent now when the window allows, otherwise queued (bounded by MaxQueuedMessages).</summary>
    public void Offer(MqttOutgoing outgoing)
    {
        lock (_sync)
        {
            if (_ended)
            {
                ForgetLocked(outgoing);
                return;
            }

            var connection = _resumed ? _connection : null;
            if (outgoing.QoS == 0)
            {
                if (connection is null)
                {
                    // QoS 0 is "at most once": a session without a live connection does not queue it.
                    _context.Metrics.Drop(MqttDropReason.OfflineQoS0);
                    return;
                }

                connection.SendPublish(outgoing, dup: false);
                return;
            }

            if (connection is not null && QueuedCountLocked == 0 && InflightCountLocked < connection.SendWindow && !connection.IsClosing)
            {
                SendNewLocked(connection, outgoing);
                return;
            }

            var outbox = Outbox;
            if (outbox.QueuedCount >= _context.MaxQueuedMessages)
            {
                _context.Metrics.LimitHit(MqttLimit.QueuedMessages);
                _context.Metrics.Drop(MqttDropReason.QueueFull);
                var victim = _context.DropOldest ? outbox.Dequeue() : outgoing;
                if (!outbox.OverflowLogged)
                {
                    // One line per overflow episode (every drop is counted): a stuck subscriber must not flood the log.
                    outbox.OverflowLogged = true;
                    LogQueueFull(_context.Logger, ClientId, _context.MaxQueuedMessages, _context.DropOldest ? "oldest" : "newest");
                }

                ForgetLocked(victim);
                if (victim == outgoing)
                {
                    return;
                }
            }

            outbox.Enqueue(outgoing);
        }
    }

    /// <summary>
    /// A server-published message for this session (<see cref="IMqttDeviceChannel.PublishToClient"/>): only when
    /// the session is the device's own (its owner is the device of this client id), online, and has a
    /// (non-shared) subscription matching the topic, at min(message QoS, that subscription's maximum). False when
    /// it did not go (or queue) here. Such a message is never stored and leaves with the connection.
    /// </summary>
    public bool TryDeliverTagged(StoredMessage message, object? tag)
    {
        lock (_sync)
        {
            if (!MqttIdentity.IsDeviceOwner(_owner, ClientId))
            {
                return false;
            }

            if (_ended || _connection is not { IsClosing: false } connection || _subscriptions is null)
            {
                return false;
            }

            if (_subscriptions.BestOwnMatch(message.Topic) is not { } best)
            {
                return false;
            }

            var outgoing = new MqttOutgoing(message, Math.Min(message.QoS, best.MaximumQoS), false, best.SubscriptionIdentifier == 0 ? null : [best.SubscriptionIdentifier]) { Tag = tag };
            if (outgoing.QoS == 0)
            {
                return _resumed && connection.SendPublish(outgoing, dup: false) == MqttSendResult.Sent;
            }

            if (_resumed && QueuedCountLocked == 0 && InflightCountLocked < connection.SendWindow)
            {
                SendNewLocked(connection, outgoing);
                return true;
            }

            if (QueuedCountLocked >= _context.MaxQueuedMessages)
            {
                _context.Metrics.LimitHit(MqttLimit.QueuedMessages);
                return false;
            }

            Outbox.Enqueue(outgoing);
            return true;
        }
    }

    /// <summary>
    /// Called once <paramref name="connection"/>'s CONNACK is written: unacknowledged PUBLISHes go again with
    /// DUP=1 and PUBRELs again, in their original order [MQTT-4.4.0-1], then the queue; from here new messages
    /// go straight to it. Nothing happens when another connection has taken the session over meanwhile.
    /// </summary>
    public void Resume(IMqttSessionConnection connection)
    {
        lock (_sync)
        {
            if (_connection != connection)
            {
                return;
            }

            _resumed = true;
            if (_outbox is { InflightCount: > 0 } outbox)
            {
                foreach (var outgoing in outbox.SnapshotInflight())
                {
                    if (outgoing.Released)
                    {
                        connection.SendPubRel(outgoing.PacketId);
                        continue;
                    }

                    switch (connection.SendPublish(outgoing, dup: outgoing.Sent))
                    {
                        case MqttSendResult.Sent:
                            outgoing.Sent = true;
                            break;
                        case MqttSendResult.Dropped:
                            // Too large for this client's Maximum Packet Size: it can never be delivered here.
                            outbox.RemoveInflight(outgoing);
                            ForgetLocked(outgoing);
                            break;
                    }
                }
            }

            PumpLocked();
        }
    }

    /// <summary>PUBACK (§3.4): completes a QoS 1 message in flight and returns it; null when the packet id is not one.</summary>
    public MqttOutgoing? AcknowledgePubAck(ushort packetId)
    {
        lock (_sync)
        {
            var outgoing = _outbox?.FindInflight(packetId);
            if (outgoing is not { QoS: 1 })
            {
                return null;
            }

            CompleteLocked(outgoing);
            return outgoing;
        }
    }

    /// <summary>
    /// PUBREC (§3.5, §4.3.3) for a QoS 2 message in flight. A failure code ends the exchange (nothing to release);
    /// otherwise the message is released (recorded, so a resend repeats PUBREL) and the caller sends PUBREL.
    /// </summary>
    public MqttPubRecOutcome AcknowledgePubRec(ushort packetId, bool failed)
    {
        lock (_sync)
        {
            var outgoing = _outbox?.FindInflight(packetId);
            if (outgoing is not { QoS: 2 })
            {
                return MqttPubRecOutcome.UnknownPacketId;
            }

            if (failed)
            {
                CompleteLocked(outgoing);
                return MqttPubRecOutcome.Ended;
            }

            if (!outgoing.Released)
            {
                outgoing.Released = true;
                if (outgoing.Sequence != 0)
                {
                    _context.StoreWriter.Enqueue(new StoreOp(ClientId, outgoing.Sequence, packetId, true, Remove: false));
                }
            }

            return MqttPubRecOutcome.Release;
        }
    }

    /// <summary>PUBCOMP (§3.7): completes a released QoS 2 message and returns it; null when the packet id is not one.</summary>
    public MqttOutgoing? AcknowledgePubComp(ushort packetId)
    {
        lock (_sync)
        {
            var outgoing = _outbox?.FindInflight(packetId);
            if (outgoing is not { QoS: 2, Released: true })
            {
                return null;
            }

            CompleteLocked(outgoing);
            return outgoing;
        }
    }

    /// <summary>
    /// An inbound QoS 2 PUBLISH: whether its packet id is already between PUBREC and PUBREL (delivered once
    /// [MQTT-4.3.3-10]) or would be one more than <paramref name="maximum"/> [MQTT-3.3.4-9].
    /// </summary>
    public MqttInboundQoS2 CheckInboundQoS2(ushort packetId, int maximum)
    {
        lock (_sync)
        {
            if (_inboundQoS2 is { } pending && pending.Contains(packetId))
            {
                return MqttInboundQoS2.Duplicate;
            }

            return (_inboundQoS2?.Count ?? 0) >= maximum ? MqttInboundQoS2.OverLimit : MqttInboundQoS2.New;
        }
    }

    /// <summary>An inbound QoS 2 message was delivered: its packet id is held until PUBREL.</summary>
    public void HoldInboundQoS2(ushort packetId)
    {
        lock (_sync)
        {
            (_inboundQoS2 ??= []).Add(packetId);
        }
    }

    /// <summary>PUBREL (§3.6): the packet id may be reused for a new message [MQTT-4.3.3-12]; false when it was not held.</summary>
    public bool ReleaseInboundQoS2(ushort packetId)
    {
        lock (_sync)
        {
            return _inboundQoS2?.Remove(packetId) ?? false;
        }
    }

    private void CompleteLocked(MqttOutgoing outgoing)
    {
        _outbox!.RemoveInflight(outgoing);
        ForgetLocked(outgoing);
        PumpLocked();
    }

    /// <summary>Sends queued messages while the client's Receive Maximum allows (MQTT 5.0 §4.9).</summary>
    private void PumpLocked()
    {
        var connection = _resumed ? _connection : null;
        while (connection is not null && !connection.IsClosing && _outbox is { QueuedCount: > 0 } outbox && outbox.InflightCount < connection.SendWindow)
        {
            SendNewLocked(connection, outbox.Dequeue());
            outbox.OverflowLogged = false;
        }
    }

    private void SendNewLocked(IMqttSessionConnection connection, MqttOutgoing outgoing)
    {
        if (outgoing.Message.ExpiresAt is { } expires && expires <= _context.Time.GetUtcNow())
        {
            // MQTT 5.0 §3.3.2.3.3: an expired message is not delivered.
            _context.Metrics.Drop(MqttDropReason.Expired);
            ForgetLocked(outgoing);
            return;
        }

        var outbox = Outbox;
        outgoing.PacketId = outbox.NextPacketId();
        var result = connection.SendPublish(outgoing, dup: false);
        if (result == MqttSendResult.Dropped)
        {
            ForgetLocked(outgoing);
            return;
        }

        // Closed: the connection went away under us; kept in flight unsent, it goes out first on the next connection.
        outgoing.Sent = result == MqttSendResult.Sent;
        outbox.AddInflight(outgoing);
        if (outgoing.Sequence != 0)
        {
            _context.StoreWriter.Enqueue(new StoreOp(ClientId, outgoing.Sequence, outgoing.PacketId, false, Remove: false));
        }
    }

    /// <summary>A message left the session (acknowledged, expired or dropped): its stored copy goes too.</summary>
    private void ForgetLocked(MqttOutgoing outgoing)
    {
        if (outgoing.Sequence != 0)
        {
            _context.StoreWriter.Enqueue(new StoreOp(ClientId, outgoing.Sequence, 0, false, Remove: true));
        }
    }

    [LoggerMessage(EventId = 5020, Level = LogLevel.Information, Message = "MQTT: queue of {ClientId} is full ({Limit}, Relay:Mqtt:MaxQueuedMessages); dropping the {Which} messages (counted in relay_mqtt_drops_total{{reason=\"queue_full\"}})")]
    private static partial void LogQueueFull(ILogger logger, string clientId, int limit, string which);
}
