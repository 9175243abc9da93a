using System.Buffers;
using System.Text;
using System.Text.Unicode;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// Packets after CONNECT (MQTT 5.0 §3.3-§3.15, 3.1.1 §3.3-§3.14). Each handler returns null to go on or
// the reason to end the connection.
internal sealed partial class MqttConnection
{
    private async ValueTask<MqttEndReason?> HandleAsync(MqttFrame frame)
    {
        if (_state is null)
        {
            if (frame.Type != MqttPacketType.Connect)
            {
                // [MQTT-3.1.0-1]: the first packet must be CONNECT; anything else closes without an answer.
                LogProtocolError(null, _remote, frame.Type.ToString(), "first packet is not CONNECT [MQTT-3.1.0-1]");
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

        var state = _state!;
        var qos = publish.QoS;
        var packetId = publish.PacketId;
        if (!publish.Topic.IsEmpty && _broker.TopicLimits.Check(publish.Topic) is { } topicLimit)
        {
            // Checked before the topic becomes a string, an alias or a walk through a tree (review C1).
            _broker.TopicLimits.Refused(topicLimit, "PUBLISH", _clientId, publish.Topic);
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
            lock (state.Sync)
            {
                if (state.InboundQoS2 is { } pending && pending.Contains(packetId))
                {
                    // [MQTT-4.3.3-10]: a re-sent QoS 2 PUBLISH before PUBREL is not delivered again.
                    WriteAck(MqttPacketType.PubRec, packetId, MqttReasonCode.Success);
                    return null;
                }

                if ((state.InboundQoS2?.Count ?? 0) >= _options.MaxInflight)
                {
                    _metrics.LimitHit(MqttLimit.Inflight);
                    return Fail(MqttReasonCode.ReceiveMaximumExceeded, "more unacknowledged QoS 2 PUBLISHes than our Receive Maximum [MQTT-3.3.4-9]");
                }
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
        else if (!_broker.Authorizer.CanPublish(_identity!, _clientId!, topic))
        {
            _metrics.Drop(MqttDropReason.NotAuthorized);
            LogPublishDenied(_clientId, topic);
            refusal = MqttReasonCode.NotAuthorized;
            reason = "not authorized to publish to this topic";
        }
        else if (_version == MqttProtocolVersion.V500 && publish.Properties.PayloadFormatIndicator == 1 && !IsUtf8(publish.Payload))
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

        var message = new StoredMessage(topic, publish.Payload.ToArray(), qos, publish.Retain, ExpiresAt(publish.Properties), ReadMessageProperties(publish.Properties));
        if (qos == 2)
        {
            lock (state.Sync)
            {
                (state.InboundQoS2 ??= []).Add(packetId);
            }
        }

        // For persistent subscribers the copies are stored before this returns, so the ack below never
        // precedes durability.
        await _broker.PublishAsync(message, _clientId, persistRetained: true, CancellationToken.None).ConfigureAwait(false);
        // Before the ack, like the store above: what an observer keeps (a command result) is durable first,
        // and what it could not keep is not acknowledged (review M3).
        if (_broker.HasObservers && !await _broker.NotifyReceivedAsync(_clientId!, message).ConfigureAwait(false))
        {
            return NotKept(state, qos, packetId);
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
    private MqttEndReason? NotKept(MqttSession state, byte qos, ushort packetId)
    {
        if (qos == 0)
        {
            return null;
        }

        if (qos == 2)
        {
            lock (state.Sync)
            {
                state.InboundQoS2?.Remove(packetId);
            }
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

        var state = _state!;
        var packetId = ack.PacketId;
        lock (state.Sync)
        {
            switch (ack.Type)
            {
                case MqttPacketType.PubRel:
                {
                    // [MQTT-4.3.3-12]: after PUBREL the packet id may be reused for a new message.
                    var known = state.InboundQoS2?.Remove(packetId) ?? false;
                    WriteAck(MqttPacketType.PubComp, packetId, known || _version != MqttProtocolVersion.V500 ? MqttReasonCode.Success : MqttReasonCode.PacketIdentifierNotFound);
                    return null;
                }

                case MqttPacketType.PubAck:
                {
                    var outgoing = state.FindInflight(packetId);
                    if (outgoing is { QoS: 1 })
                    {
                        Complete(state, outgoing);
                        if ((byte)ack.ReasonCode < 0x80 && _broker.HasObservers)
                        {
                            _broker.NotifyDelivered(state.ClientId, outgoing);
                        }
                    }

                    return null;
                }

                case MqttPacketType.PubRec:
                {
                    var outgoing = state.FindInflight(packetId);
                    if (outgoing is not { QoS: 2 })
                    {
                        if (_version == MqttProtocolVersion.V500)
                        {
                            WriteAck(MqttPacketType.PubRel, packetId, MqttReasonCode.PacketIdentifierNotFound);
                        }

                        return null;
                    }

                    if ((byte)ack.ReasonCode >= 0x80)
                    {
                        // §4.3.3: a PUBREC with an error code ends the exchange; nothing to release.
                        Complete(state, outgoing);
                        return null;
                    }

                    if (!outgoing.Released)
                    {
                        outgoing.Released = true;
                        if (outgoing.Sequence != 0)
                        {
                            _broker.QueueStoreOp(new StoreOp(state.ClientId, outgoing.Sequence, packetId, true, Remove: false));
                        }
                    }

                    SendPubRel(packetId);
                    return null;
                }

                default:
                {
                    var outgoing = state.FindInflight(packetId);
                    if (outgoing is { QoS: 2, Released: true })
                    {
                        Complete(state, outgoing);
                        if (_broker.HasObservers)
                        {
                            _broker.NotifyDelivered(state.ClientId, outgoing);
                        }
                    }

                    return null;
                }
            }
        }

        void Complete(MqttSession state, MqttOutgoing outgoing)
        {
            state.Inflight!.Remove(outgoing);
            _broker.ForgetLocked(state, outgoing);
            _broker.PumpLocked(state);
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

        var state = _state!;
        var v5 = _version == MqttProtocolVersion.V500;
        var subscriptionId = v5 ? subscribe.Properties.SubscriptionIdentifier ?? 0 : 0;
        var codes = new byte[subscribe.EntryCount];
        List<MqttSubscription>? sendRetained = null;
        var i = 0;
        foreach (var entry in subscribe.GetEntries())
        {
            if (_broker.TopicLimits.Check(entry.TopicFilter) is { } filterLimit)
            {
                _broker.TopicLimits.Refused(filterLimit, "SUBSCRIBE", _clientId, entry.TopicFilter);
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

            if (!_broker.Authorizer.CanSubscribe(_identity!, _clientId!, shared ? inner : filter))
            {
                LogSubscribeDenied(_clientId, filter);
                codes[i++] = v5 ? (byte)MqttReasonCode.NotAuthorized : (byte)0x80;
                continue;
            }

            bool exists;
            int count;
            lock (state.Sync)
            {
                exists = state.Subscriptions?.ContainsKey(filter) ?? false;
                count = state.Subscriptions?.Count ?? 0;
            }

            if (!exists && count >= _options.MaxSubscriptionsPerSession)
            {
                _metrics.LimitHit(MqttLimit.SubscriptionsPerSession);
                LogSubscriptionLimit(_clientId, _options.MaxSubscriptionsPerSession);
                codes[i++] = v5 ? (byte)MqttReasonCode.QuotaExceeded : (byte)0x80;
                continue;
            }

            var granted = Math.Min(entry.MaximumQoS, (byte)2);
            var persisted = new PersistedSubscription(filter, granted, entry.NoLocal, entry.RetainAsPublished, entry.RetainHandling, subscriptionId);
            var subscription = _broker.AddSubscription(state, persisted);
            if (state.Persistent)
            {
                await _broker.SessionStore.UpsertSubscriptionAsync(state.ClientId, persisted, CancellationToken.None).ConfigureAwait(false);
            }

            codes[i++] = granted;

            // §3.8.3.1 Retain Handling: 0 = send retained, 1 = only for a new subscription, 2 = never;
            // shared subscriptions get none (§4.8.2).
            if (!shared && (entry.RetainHandling == 0 || (entry.RetainHandling == 1 && !exists)))
            {
                (sendRetained ??= []).Add(subscription);
            }
        }

        WriteSubAck(subscribe.PacketId, codes);
        if (_broker.HasObservers)
        {
            // After the SUBACK, so what an observer publishes in answer arrives after it.
            i = 0;
            foreach (var entry in subscribe.GetEntries())
            {
                if (codes[i++] < 0x80)
                {
                    _broker.NotifySubscribed(state.ClientId, Encoding.UTF8.GetString(entry.TopicFilter));
                }
            }
        }
        if (sendRetained is not null)
        {
            foreach (var subscription in sendRetained)
            {
                var retained = _broker.GetRetained(subscription.InnerFilter);
                if (retained.Count == 0)
                {
                    continue;
                }

                var ids = subscription.SubscriptionIdentifier == 0 ? null : new[] { subscription.SubscriptionIdentifier };

                // [MQTT-3.3.1-9]: retained messages sent for a new subscription carry RETAIN=1.
                var targets = retained.Select(m => (state, new MqttOutgoing(m, Math.Min(m.QoS, subscription.MaximumQoS), true, ids))).ToList();
                await _broker.DeliverAsync(targets, CancellationToken.None).ConfigureAwait(false);
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

        var state = _state!;
        var codes = new byte[unsubscribe.FilterCount];
        var i = 0;
        foreach (var raw in unsubscribe.GetFilters())
        {
            var filter = Encoding.UTF8.GetString(raw);
            var removed = _broker.RemoveSubscription(state, filter);
            if (removed && state.Persistent)
            {
                await _broker.SessionStore.RemoveSubscriptionAsync(state.ClientId, filter, CancellationToken.None).ConfigureAwait(false);
            }

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

            var state = _state!;
            var wasPersistent = state.Persistent;
            _broker.SetExpiry(state, Math.Min(expiry, _options.MaxSessionExpirySeconds));
            if (wasPersistent && expiry == 0)
            {
                await _broker.SessionStore.DeleteSessionAsync(state.ClientId, CancellationToken.None).ConfigureAwait(false);
            }
        }

        return MqttEndReason.ClientDisconnect;
    }

    private DateTimeOffset? ExpiresAt(in MqttProperties properties) =>
        _version == MqttProtocolVersion.V500 && properties.MessageExpiryInterval is { } seconds
            ? _broker.Time.GetUtcNow().AddSeconds(seconds)
            : null;

    /// <summary>The properties an application message carries to subscribers (§3.3.2.3), copied out of the packet.</summary>
    private MqttMessageProperties? ReadMessageProperties(in MqttProperties properties)
    {
        if (_version != MqttProtocolVersion.V500 || properties.IsEmpty)
        {
            return null;
        }

        List<KeyValuePair<string, string>>? user = null;
        if (properties.UserPropertyCount > 0)
        {
            user = new(properties.UserPropertyCount);
            foreach (var (name, value) in properties.GetUserProperties())
            {
                user.Add(new(Encoding.UTF8.GetString(name), Encoding.UTF8.GetString(value)));
            }
        }

        var result = new MqttMessageProperties(
            properties.PayloadFormatIndicator,
            properties.HasContentType ? Encoding.UTF8.GetString(properties.ContentType) : null,
            properties.HasResponseTopic ? Encoding.UTF8.GetString(properties.ResponseTopic) : null,
            properties.HasCorrelationData ? properties.CorrelationData.ToArray() : null,
            user);
        return result.PayloadFormatIndicator is null && result.ContentType is null && result.ResponseTopic is null && result.CorrelationData is null && user is null
            ? null
            : result;
    }

    private static bool IsUtf8(in ReadOnlySequence<byte> payload)
    {
        if (payload.IsSingleSegment)
        {
            return Utf8.IsValid(payload.FirstSpan);
        }

        var copy = ArrayPool<byte>.Shared.Rent((int)payload.Length);
        try
        {
            payload.CopyTo(copy);
            return Utf8.IsValid(copy.AsSpan(0, (int)payload.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }

    [LoggerMessage(EventId = 5120, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: PUBLISH to {Topic} denied by the ACL; dropped")]
    private partial void LogPublishDenied(string? clientId, string topic);

    [LoggerMessage(EventId = 5121, Level = LogLevel.Debug, Message = "MQTT client {ClientId}: SUBSCRIBE to {Filter} denied by the ACL")]
    private partial void LogSubscribeDenied(string? clientId, string filter);

    [LoggerMessage(EventId = 5122, Level = LogLevel.Information, Message = "MQTT client {ClientId}: subscription refused, {Limit} already (Relay:Mqtt:MaxSubscriptionsPerSession)")]
    private partial void LogSubscriptionLimit(string? clientId, int limit);
}
