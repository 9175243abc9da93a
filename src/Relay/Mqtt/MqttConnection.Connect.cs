using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// CONNECT (MQTT 5.0 §3.1, 3.1.1 §3.1) → CONNACK (§3.2).
internal sealed partial class MqttConnection
{
    private async ValueTask<MqttEndReason?> HandleConnectAsync(MqttFrame frame)
    {
        var error = MqttPacketReader.ReadConnect(frame, out var connect);
        if (error != MqttDecodeError.None)
        {
            return RefuseMalformedConnect(frame, error);
        }

        _version = connect.Version;
        var v5 = _version == MqttProtocolVersion.V500;
        var properties = connect.Properties;
        if (v5 && properties.HasAuthenticationMethod)
        {
            // §4.12: we support no extended authentication method.
            return Refuse(MqttReasonCode.BadAuthenticationMethod, MqttConnectReturnCode.NotAuthorized, "extended authentication is not supported", MqttEndReason.AuthFailed);
        }

        var clientId = Encoding.UTF8.GetString(connect.ClientId);
        string? assigned = null;
        if (clientId.Length == 0)
        {
            // [MQTT-3.1.3-6..8]: an empty client id is given one by the server; 3.1.1 only with clean session.
            if (!_options.AllowAnonymous || (!v5 && !connect.CleanStart))
            {
                return Refuse(MqttReasonCode.ClientIdentifierNotValid, MqttConnectReturnCode.IdentifierRejected, "empty client identifier not allowed", MqttEndReason.ProtocolError);
            }

            clientId = assigned = "relay-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        }

        _clientId = clientId;
        var keepAlive = connect.KeepAliveSeconds;
        ushort? serverKeepAlive = null;
        if (v5 && (keepAlive == 0 || keepAlive > _options.MaxKeepAliveSeconds))
        {
            // MQTT 5.0 §3.2.2.3.14: Server Keep Alive replaces the client's value [MQTT-3.2.2-21].
            serverKeepAlive = (ushort)_options.MaxKeepAliveSeconds;
            keepAlive = serverKeepAlive.Value;
        }

        _keepAliveMilliseconds = keepAlive * 1000;
        uint expiry;
        uint? announcedExpiry = null;
        if (v5)
        {
            expiry = properties.SessionExpiryInterval ?? 0;
            if (expiry > _options.MaxSessionExpirySeconds)
            {
                expiry = _options.MaxSessionExpirySeconds;
                announcedExpiry = expiry;
            }

            _clientReceiveMaximum = properties.ReceiveMaximum ?? ushort.MaxValue;
            _clientMaximumPacketSize = Math.Min(properties.MaximumPacketSize ?? uint.MaxValue, (uint)_options.MaxPacketSize);
            _clientTopicAliasMaximum = properties.TopicAliasMaximum ?? 0;
            _noProblemInformation = properties.RequestProblemInformation == 0;
        }
        else
        {
            // 3.1.1 clean session = 0 keeps the session; we bound it by MaxSessionExpirySeconds.
            expiry = connect.CleanStart ? 0 : _options.MaxSessionExpirySeconds;
        }

        _sessionExpiryWasZero = expiry == 0;
        var username = connect.HasUsername ? Encoding.UTF8.GetString(connect.Username) : null;
        // The cast keeps "no password" null: a null byte[] would convert to an empty, non-null memory.
        ReadOnlyMemory<byte>? password = connect.HasPassword ? connect.Password.ToArray() : (ReadOnlyMemory<byte>?)null;
        var request = new MqttAuthRequest(clientId, username, password, _remote, _clientCertificate, (byte)_version);
        // The CONNECT deadline holds while the credentials are checked (review L6): the sweep cancels this
        // when it passes, whatever the check is waiting for (the hook, the slow-hash pool, the registry).
        MqttAuthResult auth;
        var deadline = new CancellationTokenSource();
        Volatile.Write(ref _connectCancellation, deadline);
        try
        {
            if (Volatile.Read(ref _endRequested) != 0)
            {
                return RequestedEnd;
            }

            auth = await _services.Authenticator.AuthenticateAsync(request, deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            return MqttEndReason.ConnectTimeout;
        }
        finally
        {
            Volatile.Write(ref _connectCancellation, null);
            deadline.Dispose();
        }

        if (Volatile.Read(ref _endRequested) != 0)
        {
            // Timed out (or shut down) while the check ran: nothing of the session is touched.
            return RequestedEnd;
        }

        _metrics.Auth(auth.Outcome);
        if (auth.Outcome != MqttAuthOutcome.Allow || auth.Identity is null)
        {
            // The authenticator logged why (throttled). The client gets one fixed reason per code: the real
            // one (unknown id, wrong secret, disabled) would tell a stranger which device ids exist.
            return auth.Outcome switch
            {
                MqttAuthOutcome.BadCredentials => Refuse(MqttReasonCode.BadUserNameOrPassword, MqttConnectReturnCode.BadUserNameOrPassword, "bad user name or password", MqttEndReason.AuthFailed),
                MqttAuthOutcome.RateLimited => Refuse(MqttReasonCode.ConnectionRateExceeded, MqttConnectReturnCode.NotAuthorized, "too many failed authentications from this address", MqttEndReason.AuthFailed),
                MqttAuthOutcome.Unavailable => Refuse(MqttReasonCode.ServerUnavailable, MqttConnectReturnCode.ServerUnavailable, "authentication unavailable, retry later", MqttEndReason.AuthFailed),
                MqttAuthOutcome.Busy => Refuse(MqttReasonCode.ServerBusy, MqttConnectReturnCode.ServerUnavailable, "server busy, retry later", MqttEndReason.AuthFailed),
                _ => Refuse(MqttReasonCode.NotAuthorized, MqttConnectReturnCode.NotAuthorized, "not authorized", MqttEndReason.AuthFailed),
            };
        }

        _identity = auth.Identity;
        if (connect.HasWill)
        {
            if (_services.TopicLimits.Check(connect.WillTopic) is { } willLimit)
            {
                _services.TopicLimits.Refused(willLimit, "will", clientId, connect.WillTopic);
                return Refuse(MqttReasonCode.TopicNameInvalid, MqttConnectReturnCode.NotAuthorized, "will topic over the server's level or length limit", MqttEndReason.LimitExceeded);
            }

            var willTopic = Encoding.UTF8.GetString(connect.WillTopic);
            if (willTopic.StartsWith('$') || !_services.Authorizer.CanPublish(_identity, clientId, willTopic))
            {
                // [MQTT-3.1.2-? / §3.1.3.3]: a will the client may not publish is refused up front.
                LogPublishDenied(clientId, willTopic);
                return Refuse(MqttReasonCode.NotAuthorized, MqttConnectReturnCode.NotAuthorized, "not authorized to publish the will", MqttEndReason.AuthFailed);
            }

            var willProperties = connect.WillProperties;
            _will = new StoredMessage(willTopic, connect.WillPayload.ToArray(), connect.WillQoS, connect.WillRetain, MqttMessageMapper.ExpiresAt(_version, willProperties, _services.Time), MqttMessageMapper.ReadMessageProperties(_version, willProperties));
            _willDelaySeconds = v5 ? willProperties.WillDelayInterval ?? 0 : 0;
        }

        var (attached, present) = await _services.Sessions.AttachAsync(this, clientId, _identity, connect.CleanStart, expiry, CancellationToken.None).ConfigureAwait(false);
        if (attached is not { } session)
        {
            // Another principal's session: refused before anything of it is touched (review H1).
            _will = null;
            return Refuse(MqttReasonCode.NotAuthorized, MqttConnectReturnCode.NotAuthorized, "not authorized", MqttEndReason.AuthFailed);
        }

        var ack = default(MqttConnAckProperties);
        if (v5)
        {
            ack.SessionExpiryInterval = announcedExpiry;
            ack.ReceiveMaximum = (ushort)_options.MaxInflight;
            ack.MaximumPacketSize = (uint)_options.MaxPacketSize;
            ack.TopicAliasMaximum = (ushort)_options.TopicAliasMaximum;
            ack.AssignedClientIdentifier = assigned;
            ack.ServerKeepAlive = serverKeepAlive;
            ack.RetainAvailable = true;
            ack.WildcardSubscriptionAvailable = true;
            ack.SubscriptionIdentifiersAvailable = true;
            ack.SharedSubscriptionAvailable = true;
        }

        // CONNACK first, then what the session kept: in-flight messages again, then queued ones. The session
        // sends nothing to this connection before Resume, so nothing can overtake the CONNACK [MQTT-3.2.0-1].
        WriteConnAck(_version, present, 0, ack);
        _session = session;
        session.Resume(this);

        _metrics.ClientConnected(+1);
        ConnectedAt = _services.Time.GetUtcNow();
        if (_services.Observers.Any)
        {
            _services.Observers.Connected(clientId, (byte)_version, _remote, ConnectedAt);
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            LogConnected(Primitives.LogText.Safe(clientId), _remote, _transport, (int)_version, present, expiry);
        }

        return null;
    }

    /// <summary>
    /// A CONNECT the codec refused. [MQTT-3.1.2-2]: an unsupported protocol level gets the 3.1.1 CONNACK 0x01;
    /// a v5 CONNECT gets the reason code (§3.2.2.2); anything else is closed without an answer.
    /// </summary>
    private MqttEndReason RefuseMalformedConnect(MqttFrame frame, MqttDecodeError error)
    {
        _services.ClientLog.ProtocolError(null, _remote, "CONNECT", MqttDecodeErrors.Describe(error));
        if (error == MqttDecodeError.UnsupportedProtocolVersion)
        {
            WriteConnAck(MqttProtocolVersion.V311, false, (byte)MqttConnectReturnCode.UnacceptableProtocolVersion, default);
            return MqttEndReason.ProtocolError;
        }

        var version = PeekProtocolLevel(frame);
        if (version == 5)
        {
            WriteConnAck(MqttProtocolVersion.V500, false, (byte)MqttDecodeErrors.ToReasonCode(error), default);
        }
        else if (version is 3 or 4 && error == MqttDecodeError.ClientIdentifierNotValid)
        {
            WriteConnAck(MqttProtocolVersion.V311, false, (byte)MqttConnectReturnCode.IdentifierRejected, default);
        }

        return error == MqttDecodeError.MalformedPacket ? MqttEndReason.MalformedPacket : MqttEndReason.ProtocolError;
    }

    // Protocol Name is "MQTT" (or "MQIsdp" for 3.1): the level follows it (§3.1.2.1-2).
    private static int PeekProtocolLevel(in MqttFrame frame)
    {
        Span<byte> head = stackalloc byte[9];
        var body = frame.Body;
        if (body.Length < 7)
        {
            return -1;
        }

        var length = (int)Math.Min(body.Length, head.Length);
        body.Slice(0, length).CopyTo(head);
        var nameLength = (head[0] << 8) | head[1];
        return 2 + nameLength < length ? head[2 + nameLength] : -1;
    }

    private MqttEndReason Refuse(MqttReasonCode v5Code, MqttConnectReturnCode v3Code, string? reason, MqttEndReason end)
    {
        if (_version == MqttProtocolVersion.V500)
        {
            var properties = default(MqttConnAckProperties);
            properties.ReasonString = reason;
            WriteConnAck(_version, false, (byte)v5Code, properties);
        }
        else
        {
            WriteConnAck(_version, false, (byte)v3Code, default);
        }

        return end;
    }

    [LoggerMessage(EventId = 5131, Level = LogLevel.Debug, Message = "MQTT client {ClientId} connected from {Remote} over {Transport} (protocol level {Level}, session present {Present}, expiry {Expiry} s)")]
    private partial void LogConnected(string clientId, System.Net.IPEndPoint? remote, MqttTransport transport, int level, bool present, uint expiry);
}
