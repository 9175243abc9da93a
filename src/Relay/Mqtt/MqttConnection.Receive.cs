using System.Buffers;
using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// Packets after CONNECT (MQTT 5.0 §3.3-§3.15, 3.1.1 §3.3-§3.14). Each handler returns null to go on or
// the reason to end the connection.
internal sealed partial class MqttConnection
{
    private async ValueTask<MqttEndReason?> HandleAsync(MqttFrame frame)
    {
        if (_session is null)
        {
            if (frame.Type != MqttPacketType.Connect)
            {
                // [MQTT-3.1.0-1]: the first packet must be CONNECT; anything else closes without an answer.
                _services.ClientLog.ProtocolError(null, _remote, frame.Type.ToString(), "first packet is not CONNECT [MQTT-3.1.0-1]");
                return MqttEndReason.ProtocolError;
            }

            return await HandleConnectAsync(frame).ConfigureAwait(false);
        }

        switch (frame.Type)
        {
            case MqttPacketType.Publish:
                return await HandlePublishAsync(frame).ConfigureAwait(false);
            case MqttPacketType.PubAck or MqttPacketType.PubRec or MqttPacketType.PubRel or MqttPacketType.PubComp:
                return HandleAck(frame);
            case MqttPacketType.Subscribe:
                return await HandleSubscribeAsync(frame).ConfigureAwait(false);
            case MqttPacketType.Unsubscribe:
                return await HandleUnsubscribeAsync(frame).ConfigureAwait(false);
            case MqttPacketType.PingReq:
                // §3.12.4: PINGRESP.
                WritePingResp();
                return null;
            case MqttPacketType.Disconnect:
                return await HandleDisconnectAsync(frame).ConfigureAwait(false);
            case MqttPacketType.Connect:
                // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
                return Fail(MqttReasonCode.ProtocolError, "second CONNECT [MQTT-3.1.0-2]");
            case MqttPacketType.Auth:
                // §4.12: AUTH is only valid after CONNECT named an Authentication Method; we accept none.
                return Fail(MqttReasonCode.ProtocolError, "AUTH without an authentication method");
            default:
                return Fail(MqttReasonCode.ProtocolError, "a packet only a server sends");
        }
    }

    /// <summary>PUBLISH (§3.3): resolve the topic (alias), check it, route it, then acknowledge.</summary>
    private async ValueTask<MqttEndReason?> HandlePublishAsync(MqttFrame frame)
    {
        var error = MqttPacketReader.ReadPublish(frame, _version, out var publish);
        if (error != MqttDecodeError.None)
        {
            return Fail(error, "PUBLISH");
        }

        if (publish.Properties.SubscriptionIdentifier.HasValue)
        {
            // [MQTT-3.3.4-6]: a client's PUBLISH must not carry a Subscription Identifier.
            return Fail(MqttReasonCode.ProtocolError, "Subscription Identifier in a client's PUBLISH [MQTT-3.3.4-6]");
        }

        var session = _session!;
        var qos = publish.QoS;
        var packetId = publish.PacketId;
        if (!publish.Topic.IsEmpty && _services.TopicLimits.Check(publish.Topic) is { } topicLimit)
        {
            // Checked before the topic becomes a string, an alias or a walk through a tree (review C1).
            _services.TopicLimits.Refused(topicLimit, "PUBLISH", _clientId, publish.Topic);
            if (_version != MqttProtocolVersion.V500)
            {
                // 3.1.1 has no negative acknowledgement; a server that will not process a PUBLISH closes.
                return MqttEndReason.LimitExceeded;
            }

            if (qos > 0)
            {
                WriteAck(qos == 1 ? MqttPacketType.PubAck : MqttPacketType.PubRec, packetId, MqttReasonCode.TopicNameInvalid, "topic over the server's level or length limit");
            }

            return null;
        }

        string? topic;
        if (_version == MqttProtocolVersion.V500 && publish.Properties.TopicAlias is { } alias)
        {
            // [MQTT-3.3.2-8/9]: 0 or above our Topic Alias Maximum is "Topic Alias invalid".
            if (alias == 0 || alias > _options.TopicAliasMaximum)
            {
                return Fail(MqttReasonCode.TopicAliasInvalid, "Topic Alias 0 or above the Topic Alias Maximum");
            }

            if (publish.Topic.IsEmpty)
            {
                if (_inboundAliases is null || !_inboundAliases.TryGetValue(alias, out topic))
                {
                    return Fail(MqttReasonCode.ProtocolError, "Topic Alias used before it was set");
                }
            }
            else
            {
                topic = Encoding.UTF8.GetString(publish.Topic);
                (_inboundAliases ??= [])[alias] = topic;
            }
        }
        else if (publish.Topic.IsEmpty)
        {
            return Fail(MqttReasonCode.ProtocolError, "empty topic name without a Topic Alias");
        }
        else
        {
            topic = Encoding.UTF8.GetString(publish.Topic);
        }

        _metrics.MessageIn(qos, (int)publish.Payload.Length);
        if (qos == 2)
        {
            switch (session.CheckInboundQoS2(packetId, _options.MaxInflight))
            {
                case MqttInboundQoS2.Duplicate:
                    // [MQTT-4.3.3-10]: a re-sent QoS 2 PUBLISH before PUBREL is not delivered again.
                    WriteAck(MqttPacketType.PubRec, packetId, MqttReasonCode.Success);
                    return null;
                case MqttInboundQoS2.OverLimit:
                    _metrics.LimitHit(MqttLimit.Inflight);
                    return Fail(MqttReasonCode.ReceiveMaximumExceeded, "more unacknowledged QoS 2 PUBLISHes than our Receive Maximum [MQTT-3.3.4-9]");
            }
        }

        var refusal = MqttReasonCode.Success;
        string? reason = null;
        if (topic.StartsWith('$'))
        {
            // Topics starting with '$' are the server's ($SYS) [MQTT-4.7.2-1]; clients may not publish there.
            _metrics.Drop(MqttDropReason.DollarTopic);
            refusal = MqttReasonCode.TopicNameInvalid;
            reason = "topics starting with '$' are reserved";
        }
        else if (!_services.Authorizer.CanPublish(_identity!, _clientId!, topic))
        {
            _metrics.Drop(MqttDropReason.NotAuthorized);
            LogPublishDenied(_clientId, topic);
            refusal = MqttReasonCode.NotAuthorized;
            reason = "not authorized to publish to this topic";
        }
        else if (_version == MqttProtocolVersion.V500 && publish.Properties.HasResponseTopic && !MayReceiveOn(publish.Properties.ResponseTopic))
        {
            // Review L8: the receiver answers on the Response Topic (§4.10) with its own rights; a publisher
            // may only name a topic it could subscribe to itself, or it could aim a back end at another
            // device's command topic. Refused whole, Correlation Data with it.
            _metrics.Drop(MqttDropReason.NotAuthorized);
            refusal = MqttReasonCode.NotAuthorized;
            reason = "not authorized to subscribe to the Response Topic";
        }
        else if (_version == MqttProtocolVersion.V500 && publish.Properties.PayloadFormatIndicator == 1 && !MqttMessageMapper.IsUtf8(publish.Payload))
        {
            // [MQTT-3.3.2-4]: Payload Format Indicator 1 promises UTF-8; a receiver may refuse with 0x99.
            refusal = MqttReasonCode.PayloadFormatInvalid;
            reason = "payload is not UTF-8 although Payload Format Indicator is 1";
        }

        if (refusal != MqttReasonCode.Success)
        {
            // v3.1.1 has no negative acknowledgement: the message is dropped and acknowledged as usual.
            if (qos > 0)
            {
                WriteAck(qos == 1 ? MqttPacketType.PubAck : MqttPacketType.PubRec, packetId, _version == MqttProtocolVersion.V500 ? refusal : MqttReasonCode.Success, reason);
            }

            return null;
        }

        var message = new StoredMessage(topic, publish.Payload.ToArray(), qos, publish.Retain, MqttMessageMapper.ExpiresAt(_version, publish.Properties, _services.Time), MqttMessageMapper.ReadMessageProperties(_version, publish.Properties))
        {
            Publisher = publish.Retain ? _clientId : null,
        };
        if (qos == 2)
        {
            session.HoldInboundQoS2(packetId);
        }

        // For persistent subscribers the copies are stored before this returns, so the ack below never
        // precedes durability.
        // A retained message over a retained bound (review H4): MQTT 5 refuses the whole PUBLISH with 0x97;
        // 3.1.1 has no negative acknowledgement, so there it is delivered, not retained (counted and logged).
        var v5 = _version == MqttProtocolVersion.V500;
        if (await _services.Router.PublishAsync(message, _clientId, persistRetained: true, refuseIfNotRetained: v5, CancellationToken.None).ConfigureAwait(false) < 0)
        {
            if (qos == 2)
            {
                session.ReleaseInboundQoS2(packetId);
            }

            if (qos > 0)
            {
                WriteAck(qos == 1 ? MqttPacketType.PubAck : MqttPacketType.PubRec, packetId, MqttReasonCode.QuotaExceeded, "retained message quota exceeded");
            }

            return null;
        }

        // Before the ack, like the store above: what an observer keeps (a command result) is durable first,
        // and what it could not keep is not acknowledged (review M3).
        if (_services.Observers.Any && !await _services.Observers.ReceivedAsync(_clientId!, message).ConfigureAwait(false))
        {
            return NotKept(session, qos, packetId);
        }

        if (qos == 1)
        {
            WriteAck(MqttPacketType.PubAck, packetId, MqttReasonCode.Success);
        }
        else if (qos == 2)
        {
            WriteAck(MqttPacketType.PubRec, packetId, MqttReasonCode.Success);
        }

        return null;
    }

    /// <summary>
    /// An observer could not keep a PUBLISH (a command result whose commit failed): it must not be
    /// acknowledged as received, so the client sends it again. MQTT 5 answers 0x80 Unspecified error, which
    /// ends the exchange (§4.3.2, §4.3.3). 3.1.1 has no negative acknowledgement: the connection closes without
    /// one, and the client resends the PUBLISH when it reconnects [MQTT-4.4.0-1]. A QoS 2 packet id is
    /// forgotten either way, so the resent PUBLISH is processed instead of being taken for a duplicate.
    /// </summary>
    private MqttEndReason? NotKept(MqttSession session, byte qos, ushort packetId)
    {
        if (qos == 0)
        {
            return null;
        }

        if (qos == 2)
        {
            session.ReleaseInboundQoS2(packetId);
        }

        if (_version != MqttProtocolVersion.V500)
        {
            return MqttEndReason.NotStored;
        }

        WriteAck(qos == 1 ? MqttPacketType.PubAck : MqttPacketType.PubRec, packetId, MqttReasonCode.UnspecifiedError, "the server could not store the message; send it again");
        return null;
    }

    /// <summary>PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7; QoS 1 and 2 flows of §4.3).</summary>
    private MqttEndReason? HandleAck(MqttFrame frame)
    {
        var error = MqttPacketReader.ReadAck(frame, _version, out var ack);
        if (error != MqttDecodeError.None)
        {
            return Fail(error, frame.Type.ToString());
        }

        var session = _session!;
        var packetId = ack.PacketId;
        switch (ack.Type)
        {
            case MqttPacketType.PubRel:
            {
                // [MQTT-4.3.3-12]: after PUBREL the packet id may be reused for a new message.
                var known = session.ReleaseInboundQoS2(packetId);
                WriteAck(MqttPacketType.PubComp, packetId, known || _version != MqttProtocolVersion.V500 ? MqttReasonCode.Success : MqttReasonCode.PacketIdentifierNotFound);
                return null;
            }

            case MqttPacketType.PubAck:
            {
                if (session.AcknowledgePubAck(packetId) is { } delivered && (byte)ack.ReasonCode < 0x80 && _services.Observers.Any)
                {
                    _services.Observers.Delivered(session.ClientId, delivered);
                }

                return null;
            }

            case MqttPacketType.PubRec:
            {
                var outcome = session.AcknowledgePubRec(packetId, failed: (byte)ack.ReasonCode >= 0x80);
                if (outcome == MqttPubRecOutcome.Release)
                {
                    SendPubRel(packetId);
                }
                else if (outcome == MqttPubRecOutcome.UnknownPacketId && _version == MqttProtocolVersion.V500)
                {
                    WriteAck(MqttPacketType.PubRel, packetId, MqttReasonCode.PacketIdentifierNotFound);
                }

                return null;
            }

            default:
            {
                if (session.AcknowledgePubComp(packetId) is { } delivered && _services.Observers.Any)
                {
                    _services.Observers.Delivered(session.ClientId, delivered);
                }

                return null;
            }
        }
    }

    /// <summary>SUBSCRIBE (§3.8) → SUBACK (§3.9), then retained messages per Retain Handling (§3.8.3.1).</summary>
    private async ValueTask<MqttEndReason?> HandleSubscribeAsync(MqttFrame frame)
    {
        var error = MqttPacketReader.ReadSubscribe(frame, _version, out var subscribe);
        if (error != MqttDecodeError.None)
        {
            return Fail(error, "SUBSCRIBE");
        }

        var session = _session!;
        var v5 = _version == MqttProtocolVersion.V500;
        var subscriptionId = v5 ? subscribe.Properties.SubscriptionIdentifier ?? 0 : 0;
        var codes = new byte[subscribe.EntryCount];
        List<MqttSubscription>? sendRetained = null;
        var i = 0;
        foreach (var entry in subscribe.GetEntries())
        {
            if (_services.TopicLimits.Check(entry.TopicFilter) is { } filterLimit)
            {
                _services.TopicLimits.Refused(filterLimit, "SUBSCRIBE", _clientId, entry.TopicFilter);
                codes[i++] = v5 ? (byte)MqttReasonCode.TopicFilterInvalid : (byte)0x80;
                continue;
            }

            var filter = Encoding.UTF8.GetString(entry.TopicFilter);
            var shared = MqttTopic.TryParseShared(filter, out _, out var inner);
            if (shared && entry.NoLocal)
            {
                // [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
                return Fail(MqttReasonCode.ProtocolError, "No Local on a shared subscription [MQTT-3.8.3-4]");
            }

            if (!_services.Authorizer.CanSubscribe(_identity!, _clientId!, shared ? inner : filter))
            {
                LogSubscribeDenied(_clientId, filter);
                codes[i++] = v5 ? (byte)MqttReasonCode.NotAuthorized : (byte)0x80;
                continue;
            }

            var granted = Math.Min(entry.MaximumQoS, (byte)2);
            var persisted = new PersistedSubscription(filter, granted, entry.NoLocal, entry.RetainAsPublished, entry.RetainHandling, subscriptionId);
            var (subscription, existed) = await _services.Router.SubscribeAsync(session, persisted, CancellationToken.None).ConfigureAwait(false);
            if (subscription is null)
            {
                // Relay:Mqtt:MaxSubscriptionsPerSession (counted and logged by the router).
                codes[i++] = v5 ? (byte)MqttReasonCode.QuotaExceeded : (byte)0x80;
                continue;
            }

            codes[i++] = granted;

            // §3.8.3.1 Retain Handling: 0 = send retained, 1 = only for a new subscription, 2 = never;
            // shared subscriptions get none (§4.8.2).
            if (!shared && (entry.RetainHandling == 0 || (entry.RetainHandling == 1 && !existed)))
            {
                (sendRetained ??= []).Add(subscription);
            }
        }

        WriteSubAck(subscribe.PacketId, codes);
        if (_services.Observers.Any)
        {
            // After the SUBACK, so what an observer publishes in answer arrives after it.
            i = 0;
            foreach (var entry in subscribe.GetEntries())
            {
                if (codes[i++] < 0x80)
                {
                    _services.Observers.Subscribed(session.ClientId, Encoding.UTF8.GetString(entry.TopicFilter));
                }
            }
        }

        if (sendRetained is not null)
        {
            foreach (var subscription in sendRetained)
            {
                await _services.Router.SendRetainedAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            }
        }

        return null;
    }

    /// <summary>UNSUBSCRIBE (§3.10) → UNSUBACK (§3.11; v5 0x11 for a filter that had no subscription).</summary>
    private async ValueTask<MqttEndReason?> HandleUnsubscribeAsync(MqttFrame frame)
    {
        var error = MqttPacketReader.ReadUnsubscribe(frame, _version, out var unsubscribe);
        if (error != MqttDecodeError.None)
        {
            return Fail(error, "UNSUBSCRIBE");
        }

        var session = _session!;
        var codes = new byte[unsubscribe.FilterCount];
        var i = 0;
        foreach (var raw in unsubscribe.GetFilters())
        {
            var removed = await _services.Router.UnsubscribeAsync(session, Encoding.UTF8.GetString(raw), CancellationToken.None).ConfigureAwait(false);
            codes[i++] = removed ? (byte)MqttReasonCode.Success : (byte)MqttReasonCode.NoSubscriptionExisted;
        }

        WriteUnsubAck(unsubscribe.PacketId, codes);
        return null;
    }

    /// <summary>DISCONNECT (§3.14): the will is discarded [MQTT-3.14.4-3] unless v5 reason 0x04 asks for it.</summary>
    private async ValueTask<MqttEndReason?> HandleDisconnectAsync(MqttFrame frame)
    {
        var error = MqttPacketReader.ReadDisconnect(frame, _version, out var disconnect);
        if (error != MqttDecodeError.None)
        {
            return Fail(error, "DISCONNECT");
        }

        if (_version != MqttProtocolVersion.V500 || disconnect.ReasonCode != MqttReasonCode.DisconnectWithWill)
        {
            _will = null;
        }

        if (_version == MqttProtocolVersion.V500 && disconnect.Properties.SessionExpiryInterval is { } expiry)
        {
            if (_sessionExpiryWasZero && expiry != 0)
            {
                // [MQTT-3.14.2-2]: a session that was to end with the connection cannot be made persistent here.
                _will = null;
                return Fail(MqttReasonCode.ProtocolError, "Session Expiry Interval set on DISCONNECT after 0 on CONNECT [MQTT-3.14.2-2]");
            }

            await _services.Sessions.SetExpiryAsync(_session!, Math.Min(expiry, _options.MaxSessionExpirySeconds), CancellationToken.None).ConfigureAwait(false);
        }

        return MqttEndReason.ClientDisconnect;
    }

    /// <summary>Whether this client could subscribe to <paramref name="responseTopicUtf8"/>, i.e. receive the answers it asks for (review L8).</summary>
    private bool MayReceiveOn(in ReadOnlySequence<byte> responseTopicUtf8)
    {
        if (_services.TopicLimits.Check(responseTopicUtf8) is not null)
        {
            _services.ClientLog.ResponseTopicDenied(_clientId, Encoding.UTF8.GetString(responseTopicUtf8.Slice(0, Math.Min(responseTopicUtf8.Length, Primitives.LogText.MaxLength * 4))));
            return false;
        }

        var responseTopic = Encoding.UTF8.GetString(responseTopicUtf8);
        if (!responseTopic.StartsWith('$') && _services.Authorizer.CanSubscribe(_identity!, _clientId!, responseTopic))
        {
            return true;
        }

        _services.ClientLog.ResponseTopicDenied(_clientId, responseTopic);
        return false;
    }

    private void LogPublishDenied(string? clientId, string topic)
    {
        if (_logger.IsEnabled(LogLevel.Debug))
        {
            LogPublishDeniedCore(Primitives.LogText.Safe(clientId), Primitives.LogText.Safe(topic));
        }
    }

    private void LogSubscribeDenied(string? clientId, string filter)
    {
        if (_logger.IsEnabled(LogLevel.Debug))
        {
            LogSubscribeDeniedCore(Primitives.LogText.Safe(clientId), Primitives.LogText.Safe(filter));
        }
    }

    [LoggerMessage(EventId = 5120, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: PUBLISH to {Topic} denied by the ACL; dropped")]
    private partial void LogPublishDeniedCore(string clientId, string topic);

    [LoggerMessage(EventId = 5121, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: SUBSCRIBE to {Filter} denied by the ACL")]
    private partial void LogSubscribeDeniedCore(string clientId, string filter);
}
