using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>
/// One MQTT network connection (any transport) and its read loop: the first packet must be CONNECT
/// [MQTT-3.1.0-1], after which packets are handled in order and answered through <see cref="MqttConnection"/>'s
/// send side. Session state that outlives the connection is in <see cref="MqttSession"/>.
/// Per-connection state is kept to fields; buffers belong to the transport's pipes, which hold none while idle.
/// </summary>
internal sealed partial class MqttConnection : IMqttSessionConnection
{
    private readonly MqttConnectionServices _services;
    private readonly MqttOptions _options;
    private readonly MqttMetrics _metrics;
    private readonly PipeReader _input;
    private readonly MqttConnectionOutput _out;
    private readonly MqttTransport _transport;
    private readonly IPEndPoint? _remote;
    private readonly X509Certificate2? _clientCertificate;
    private readonly ILogger _logger;
    private readonly int _preConnectLimit;

    // Cancelled by the sweep when the CONNECT deadline passes while the CONNECT is being authenticated.
    private CancellationTokenSource? _connectCancellation;

    private MqttProtocolVersion _version;
    private MqttSession? _session;
    private MqttIdentity? _identity;
    private string? _clientId;
    private long _lastReceived;
    private long _connectDeadline;
    private int _keepAliveMilliseconds;
    private ushort _clientReceiveMaximum = ushort.MaxValue;
    private uint _clientMaximumPacketSize;
    private ushort _clientTopicAliasMaximum;
    private Dictionary<ushort, string>? _inboundAliases;
    private Dictionary<string, ushort>? _outboundAliases;
    private StoredMessage? _will;
    private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private uint _willDelaySeconds;
    private bool _sessionExpiryWasZero;
    private bool _noProblemInformation;

    // How long a client may stay over Relay:Mqtt:MaxPendingOutputBytes, its QoS 0 messages dropped, before it is closed.
    private const long StuckOutputMilliseconds = 10_000;

    // Set (once) by whoever decides the connection must end, as reason + 1 so one write carries both;
    // the read loop sees it after CancelPendingRead.
    private int _endRequested;

    public MqttConnection(MqttConnectionServices services, IDuplexPipe transport, MqttTransport kind, IPEndPoint? remote, X509Certificate2? clientCertificate, ILogger logger)
    {
        _services = services;
        _options = services.Options;
        _metrics = services.Metrics;
        _input = transport.Input;
        _out = new MqttConnectionOutput(transport.Output, services.Metrics, services.Options.MaxPendingOutputBytes, OutputLimitHit);
        _transport = kind;
        _remote = remote;
        _clientCertificate = clientCertificate;
        _logger = logger;
        _clientMaximumPacketSize = (uint)_options.MaxPacketSize;
        _preConnectLimit = Math.Min(_options.MaxPreConnectPacketBytes, _options.MaxPacketSize);
    }

    public string? ClientId => _clientId;

    public IPEndPoint? RemoteEndPoint => _remote;

    /// <summary>The protocol level spoken (4 = 3.1.1, 5 = 5.0); 0 before CONNECT.</summary>
    public byte ProtocolVersion => (byte)_version;

    /// <summary>When the CONNECT was accepted.</summary>
    public DateTimeOffset ConnectedAt { get; private set; }

    /// <summary>How many QoS 1/2 PUBLISHes may be unacknowledged: the client's Receive Maximum, capped by ours (§4.9).</summary>
    public int SendWindow => Math.Min(_clientReceiveMaximum, _options.MaxInflight);

    /// <summary>
    /// Starts serving one accepted connection, whatever carries it (our socket transport, Kestrel TCP/TLS), and
    /// returns the task that runs it; null when Relay:Mqtt:MaxConnectionsPerIp refused it before anything was
    /// read (the caller closes it without a word). Not async itself: an idle device's connection then carries
    /// one state machine fewer for its whole life; the connection settles the accounting when it ends.
    /// </summary>
    public static Task<MqttEndReason>? TryServe(MqttConnectionServices services, IDuplexPipe transport, MqttTransport kind, IPEndPoint? remote, X509Certificate2? clientCertificate, ILogger<MqttConnection> logger, IPEndPoint? local = null)
    {
        remote = MqttConnections.Unmapped(remote);
        var ip = remote?.Address;
        if (!services.Connections.TryAdmit(kind, ip))
        {
            return null;
        }

        return new MqttConnection(services, transport, kind, remote, clientCertificate, logger) { AccountedIp = ip, Accounted = true, LocalEndPoint = MqttConnections.Unmapped(local) }.RunAsync();
    }

    /// <summary>Runs the connection until it ends; returns why.</summary>
    public async Task<MqttEndReason> RunAsync()
    {
        _lastReceived = Environment.TickCount64;
        _connectDeadline = _lastReceived + (_options.ConnectTimeoutSeconds * 1000L);
        _services.Connections.Add(this);
        var end = MqttEndReason.PeerClosed;
        try
        {
            // The read loop lives here rather than in a method of its own: an idle device's connection then
            // carries one suspended state machine fewer for its whole life.
            while (true)
            {
                var result = await _input.ReadAsync().ConfigureAwait(false);
                if (Volatile.Read(ref _endRequested) != 0)
                {
                    end = RequestedEnd;
                    break;
                }

                var buffer = result.Buffer;
                var stop = (MqttEndReason?)null;
                _out.BeginBatch();
                try
                {
                    // Drain every complete packet of this read before flushing once (Kestrel's loop shape).
                    while (stop is null)
                    {
                        // Before CONNECT a stranger gets a small packet only, checked on the declared length (review L6).
                        var beforeConnect = _session is null;
                        var status = MqttFrameReader.TryRead(ref buffer, beforeConnect ? _preConnectLimit : _options.MaxPacketSize, out var frame, out var error);
                        if (status == OperationStatus.NeedMoreData)
                        {
                            break;
                        }

                        if (status != OperationStatus.Done)
                        {
                            if (error == MqttDecodeError.PacketTooLarge && beforeConnect)
                            {
                                _metrics.LimitHit(MqttLimit.PreConnectPacketSize);
                                _services.ClientLog.PreConnectTooLarge(_remote, _preConnectLimit);
                                stop = MqttEndReason.LimitExceeded;
                                break;
                            }

                            if (error == MqttDecodeError.PacketTooLarge)
                            {
                                _metrics.LimitHit(MqttLimit.PacketSize);
                            }

                            stop = Fail(error, "framing");
                            break;
                        }

                        _lastReceived = Environment.TickCount64;
                        stop = await HandleAsync(frame).ConfigureAwait(false);
                        if (stop is null && Volatile.Read(ref _endRequested) != 0)
                        {
                            stop = RequestedEnd;
                        }
                    }

                    if (stop is null && result.IsCompleted)
                    {
                        // Leftover bytes at EOF are a truncated packet.
                        stop = buffer.IsEmpty ? MqttEndReason.PeerClosed : MqttEndReason.MalformedPacket;
                    }
                }
                finally
                {
                    _input.AdvanceTo(buffer.Start, buffer.End);
                    _out.EndBatch();
                }

                if (stop is { } reason)
                {
                    end = reason;
                    break;
                }
            }
        }
        catch (Exception e) when (e is IOException or Microsoft.AspNetCore.Connections.ConnectionResetException or Microsoft.AspNetCore.Connections.ConnectionAbortedException or OperationCanceledException or System.Net.WebSockets.WebSocketException)
        {
            end = Volatile.Read(ref _endRequested) != 0 ? RequestedEnd : MqttEndReason.PeerClosed;
        }
        finally
        {
            _services.Connections.Remove(this);
            await CloseAsync(end).ConfigureAwait(false);
            if (Accounted)
            {
                _services.Connections.Release(_transport, AccountedIp);
            }
        }

        return end;
    }

    /// <summary>Completes once the connection has ended and let go of its session (its will, if any, published).</summary>
    public Task Ended => _ended.Task;

    /// <summary>Set by <see cref="TryServe"/>: the connection was counted, per transport and per IP.</summary>
    public bool Accounted { get; init; }

    /// <summary>Our address the client reached (rendezvous names it in TURN URIs); null when the transport does not say.</summary>
    public IPEndPoint? LocalEndPoint { get; init; }

    /// <summary>The address counted against Relay:Mqtt:MaxConnectionsPerIp, if any.</summary>
    public IPAddress? AccountedIp { get; init; }

    private MqttEndReason RequestedEnd => (MqttEndReason)(Volatile.Read(ref _endRequested) - 1);

    /// <summary>Asks the read loop to end (keep-alive, takeover, shutdown); v5 clients get a DISCONNECT with <paramref name="code"/> first.</summary>
    public bool RequestEnd(MqttEndReason reason, MqttReasonCode code)
    {
        if (Interlocked.CompareExchange(ref _endRequested, (int)reason + 1, 0) != 0)
        {
            return false;
        }

        if (_session is not null && _version == MqttProtocolVersion.V500)
        {
            WriteDisconnect(code, null);
        }

        _input.CancelPendingRead();
        return true;
    }

    /// <summary>Another connection took the session over [MQTT-3.1.4-3]: v5 0x8E, then close.</summary>
    public void TakeOver() => _ = RequestEnd(MqttEndReason.TakenOver, MqttReasonCode.SessionTakenOver);

    /// <summary>Called by the housekeeping sweep: the CONNECT deadline and 1.5x keep-alive [MQTT-3.1.2-24].</summary>
    public void CheckDeadlines(long now)
    {
        if (_session is null)
        {
            // Counted once: the sweep may see the deadline again before the read loop has ended.
            if (now > _connectDeadline && RequestEnd(MqttEndReason.ConnectTimeout, MqttReasonCode.MaximumConnectTime))
            {
                _metrics.LimitHit(MqttLimit.ConnectTimeout);
                _services.ClientLog.ConnectTimeout(_remote, _options.ConnectTimeoutSeconds);
                CancelConnect();
            }

            return;
        }

        if (_keepAliveMilliseconds > 0 && now - Volatile.Read(ref _lastReceived) > _keepAliveMilliseconds * 3L / 2
            && RequestEnd(MqttEndReason.KeepAliveTimeout, MqttReasonCode.KeepAliveTimeout))
        {
            _metrics.LimitHit(MqttLimit.KeepAlive);
            _services.ClientLog.KeepAlive(_clientId, _keepAliveMilliseconds / 1000);
            return;
        }

        // Over Relay:Mqtt:MaxPendingOutputBytes and still not reading: everything to it is being dropped.
        _out.EndIfOverLimitFor(now, StuckOutputMilliseconds);
    }

    /// <summary>A protocol failure: v5 gets DISCONNECT with the reason (§4.13), v3.1.1 a close; logged, never at Error.</summary>
    private MqttEndReason Fail(MqttDecodeError error, string where)
    {
        var code = MqttDecodeErrors.ToReasonCode(error);
        _services.ClientLog.ProtocolError(_clientId, _remote, where, MqttDecodeErrors.Describe(error));
        return Fail(code, MqttDecodeErrors.Describe(error), error == MqttDecodeError.MalformedPacket ? MqttEndReason.MalformedPacket : MqttEndReason.ProtocolError);
    }

    private MqttEndReason Fail(MqttReasonCode code, string reason, MqttEndReason end = MqttEndReason.ProtocolError)
    {
        if (_session is not null && _version == MqttProtocolVersion.V500)
        {
            WriteDisconnect(code, reason);
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            LogClosing(Primitives.LogText.Safe(_clientId), _remote, code, reason);
        }

        return end;
    }

    private async ValueTask CloseAsync(MqttEndReason end)
    {
        // Closing first: from here a message routed to this connection stays with the session (in flight,
        // unsent) instead of going into a pipe nobody will read; what was written before is flushed.
        await _out.DrainAsync().ConfigureAwait(false);
        _metrics.Ended(end);
        if (_session is { } session)
        {
            _metrics.ClientConnected(-1);

            // The will goes out unless the client said DISCONNECT normally (§3.1.2.5, §3.14.4);
            // v5 reason 0x04 keeps it (HandleDisconnect decides and clears _will otherwise).
            var will = _will;
            try
            {
                var (detached, publishWillNow, at) = await _services.Sessions.DetachAsync(this, session, will, _willDelaySeconds, CancellationToken.None).ConfigureAwait(false);
                if (detached)
                {
                    _services.Devices.Disconnected(session.ClientId, at);
                    _services.Observers.Disconnected(session.ClientId, at);
                    if (publishWillNow)
                    {
                        await _services.Router.PublishWillAsync(will!, session.ClientId, CancellationToken.None).ConfigureAwait(false);
                    }
                }
                else if (will is not null && _willDelaySeconds == 0)
                {
                    // Taken over: the old connection's will is published unless a delay lets the new one cancel it.
                    await _services.Router.PublishAsync(will, _clientId, persistRetained: true, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogDetachFailed(e, _clientId);
            }
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            LogEnded(Primitives.LogText.Safe(_clientId), _remote, _transport, end);
        }

        _ended.TrySetResult();
    }

    [LoggerMessage(EventId = 5100, Level = LogLevel.Debug, Message = "MQTT connection {ClientId} from {Remote} over {Transport} ended: {End}")]
    private partial void LogEnded(string clientId, IPEndPoint? remote, MqttTransport transport, MqttEndReason end);

    [LoggerMessage(EventId = 5102, Level = LogLevel.Debug, Message = "MQTT connection {ClientId} from {Remote}: closing with {Code} ({Reason})")]
    private partial void LogClosing(string clientId, IPEndPoint? remote, MqttReasonCode code, string reason);

    [LoggerMessage(EventId = 5105, Level = LogLevel.Error, Message = "MQTT client {ClientId}: ending the session failed")]
    private partial void LogDetachFailed(Exception exception, string? clientId);

    // The CONNECT deadline passed: an authentication still running is abandoned (review L6).
    private void CancelConnect()
    {
        try
        {
            Volatile.Read(ref _connectCancellation)?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The authentication finished meanwhile; the read loop sees the requested end.
        }
    }
}
