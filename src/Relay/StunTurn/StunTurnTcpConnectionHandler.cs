using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Rendezvous.Stun;
using Relay.Server.Primitives;
using Relay.Server.Turn;

namespace Relay.Server.StunTurn;

/// <summary>
/// STUN and TURN over TCP and TLS (RFC 8489 §6.2.2, §6.2.3, RFC 8656 §3.1) on Kestrel's pooled socket
/// pipes. STUN messages are framed by the header's length field and ChannelData by its own (RFC 8656
/// §12.5, told apart by the first two bits, RFC 7983); anything else closes the connection, because a
/// stream has no way to resynchronise after garbage.
/// </summary>
internal sealed partial class StunTurnTcpConnectionHandler : ConnectionHandler
{
    private readonly StunBindingService _service;
    private readonly TurnRelay? _turn;
    private readonly StunMetrics _metrics;
    private readonly StunTcpOptions _options;
    private readonly TimeSpan _idleTimeout;
    private readonly TimeSpan _messageTimeout;
    private readonly TimeProvider _deadlineClock;

    // Open connections on the server, every address and transport together (Relay:Stun:Tcp:MaxConnections).
    private int _open;
    private readonly ILogger<StunTurnTcpConnectionHandler> _logger;
    private readonly PerIpConnectionLimiter _connectionsPerIp;

    // Every line below that a client can cause is sampled: one per slot per 10 s (review M6).
    private readonly LogThrottle _logThrottle;

    public StunTurnTcpConnectionHandler(StunBindingService service, TurnRelay turn, StunMetrics metrics, IOptions<StunOptions> options, TimeProvider time, ILogger<StunTurnTcpConnectionHandler> logger)
    {
        _service = service;
        _turn = turn.Enabled ? turn : null;
        _metrics = metrics;
        _options = options.Value.Tcp;
        _idleTimeout = TimeSpan.FromSeconds(_options.IdleTimeoutSeconds);
        _messageTimeout = TimeSpan.FromSeconds(_options.MessageTimeoutSeconds);

        // Connection deadlines are about the wire, so they run on the system clock, as Kestrel's own do:
        // tests that move the host's clock (nonce and credential expiry) must not time connections out.
        _deadlineClock = TimeProvider.System;
        _connectionsPerIp = new PerIpConnectionLimiter(_options.MaxConnectionsPerIp, time, LogConnectionLimit);
        _logThrottle = new LogThrottle(Enum.GetValues<LogSlot>().Length, TimeSpan.FromSeconds(10), time);
        _logger = logger;
    }

    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var transport = connection.Features.Get<ITlsHandshakeFeature>() is null ? StunTransport.Tcp : StunTransport.Tls;
        if (connection.RemoteEndPoint is not IPEndPoint remote || connection.LocalEndPoint is not IPEndPoint local)
        {
            return;
        }

        // The global cap first: past it a connection costs no per-IP entry and no buffers (review L6).
        if (Interlocked.Increment(ref _open) > _options.MaxConnections)
        {
            Interlocked.Decrement(ref _open);
            _metrics.Drop(transport, StunDropReason.ConnectionCap);
            if (_logThrottle.TryEnter((int)LogSlot.Cap, out var held))
            {
                LogConnectionCap(remote.Address, _options.MaxConnections, held);
            }

            connection.Abort(new ConnectionAbortedException("Connection cap (Relay:Stun:Tcp:MaxConnections)"));
            return;
        }

        var ip = remote.Address;
        if (!_connectionsPerIp.TryEnter(ip))
        {
            Interlocked.Decrement(ref _open);
            _metrics.Drop(transport, StunDropReason.ConnectionLimit);
            connection.Abort(new ConnectionAbortedException("Per-IP connection limit (Relay:Stun:Tcp:MaxConnectionsPerIp)"));
            return;
        }

        _metrics.Connection(transport, +1);
        var end = StunConnectionEnd.PeerClosed;
        try
        {
            var context = new StunRequestContext(StunAddress.FromEndPoint(remote), StunAddress.FromEndPoint(local), transport);
            end = await ServeAsync(connection, context).ConfigureAwait(false);
        }
        catch (ConnectionResetException)
        {
            end = StunConnectionEnd.PeerClosed;
        }
        catch (IOException)
        {
            end = StunConnectionEnd.PeerClosed;
        }
        finally
        {
            _metrics.Connection(transport, -1);
            _connectionsPerIp.Leave(ip);
            Interlocked.Decrement(ref _open);
            if (_logger.IsEnabled(LogLevel.Debug) && _logThrottle.TryEnter((int)LogSlot.Ended, out var suppressed))
            {
                LogConnectionEnded(remote, transport, end, suppressed);
            }

            await connection.Transport.Input.CompleteAsync().ConfigureAwait(false);
            await connection.Transport.Output.CompleteAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Kestrel's read loop: drain every complete frame of a read, answer them with one flush, and
    /// advance in <c>finally</c>. After an RFC 6062 ConnectionBind the connection becomes raw peer data.
    /// </summary>
    private async Task<StunConnectionEnd> ServeAsync(ConnectionContext connection, StunRequestContext context)
    {
        var input = connection.Transport.Input;
        var sink = new StreamClientSink(connection.Transport.Output);
        var turnContext = new TurnContext(context.Client, context.Local, context.Transport, null, sink);
        var response = ArrayPool<byte>.Shared.Rent(_service.ResponseBufferSize);
        // Only a complete message moves the deadlines (review L6:
        // when every read reset the idle timer, one byte a second held a connection forever): a message
        // started, or the first one awaited since the accept, must complete within _messageTimeout; between
        // messages the connection may idle for _idleTimeout.
        using var idle = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _deadlineClock);
        long? messageStarted = _deadlineClock.GetTimestamp();
        try
        {
            while (true)
            {
                var waitingForMessage = messageStarted is not null;
                idle.CancelAfter(waitingForMessage ? Remaining(messageStarted.GetValueOrDefault()) : _idleTimeout);
                ReadResult result;
                try
                {
                    result = await input.ReadAsync(idle.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (idle.IsCancellationRequested)
                {
                    _metrics.Drop(context.Transport, waitingForMessage ? StunDropReason.MessageTimeout : StunDropReason.IdleTimeout);
                    return waitingForMessage ? StunConnectionEnd.MessageTimeout : StunConnectionEnd.IdleTimeout;
                }

                if (!idle.TryReset())
                {
                    _metrics.Drop(context.Transport, waitingForMessage ? StunDropReason.MessageTimeout : StunDropReason.IdleTimeout);
                    return waitingForMessage ? StunConnectionEnd.MessageTimeout : StunConnectionEnd.IdleTimeout;
                }

                var buffer = result.Buffer;
                var read = default(ReadOutcome);
                try
                {
                    while (true)
                    {
                        var unbuffered = DrainFrames(ref buffer, context, turnContext, sink, response, ref read);
                        if (unbuffered == 0)
                        {
                            break;
                        }

                        // A flush is still pending: this response waits for it instead of being dropped.
                        if (!await sink.SendAsync(response.AsMemory(0, unbuffered)).ConfigureAwait(false))
                        {
                            return StunConnectionEnd.PeerClosed;
                        }

                        if (read.DataPeer is not null)
                        {
                            break;
                        }
                    }

                    if (read.End == StunConnectionEnd.None && read.DataPeer is null && result.IsCompleted)
                    {
                        read.End = EndOfInput(buffer, context.Transport);
                    }
                }
                finally
                {
                    // A complete message restarts the clock for the next one; leftover bytes are a message
                    // under way, which keeps the deadline it started with.
                    if (read.Frames > 0)
                    {
                        messageStarted = buffer.IsEmpty ? null : _deadlineClock.GetTimestamp();
                    }
                    else if (messageStarted is null && !buffer.IsEmpty)
                    {
                        messageStarted = _deadlineClock.GetTimestamp();
                    }

                    if (read.DataPeer is null)
                    {
                        input.AdvanceTo(buffer.Start, buffer.End);
                    }
                    else
                    {
                        // Not examined: the relay's first read must see bytes that are already here.
                        input.AdvanceTo(buffer.Start);
                    }
                }

                if (read.Wrote && !await sink.FlushAsync().ConfigureAwait(false))
                {
                    return StunConnectionEnd.PeerClosed;
                }

                if (read.DataPeer is not null)
                {
                    sink.Complete();
                    await _turn!.RelayTcpDataAsync(read.DataPeer, input, connection.Transport.Output).ConfigureAwait(false);
                    return StunConnectionEnd.PeerClosed;
                }

                if (read.End != StunConnectionEnd.None)
                {
                    return read.End;
                }
            }
        }
        finally
        {
            sink.Complete();
            _turn?.OnConnectionClosed(turnContext);
            ArrayPool<byte>.Shared.Return(response);
        }
    }

    /// <summary>
    /// Handles every complete frame in <paramref name="buffer"/>, appending responses to the sink without
    /// flushing. Stops at an incomplete frame, at a protocol error or a ConnectionBind (both recorded in
    /// <paramref name="read"/>), and at a response the sink cannot buffer while a flush is pending: that
    /// one is left in <paramref name="response"/> and its length returned, for the caller to send.
    /// </summary>
    private int DrainFrames(ref ReadOnlySequence<byte> buffer, in StunRequestContext context, in TurnContext turnContext, StreamClientSink sink, byte[] response, ref ReadOutcome read)
    {
        while (!buffer.IsEmpty)
        {
            if (_turn is not null && TurnChannel.LooksLikeChannelData(FirstByte(buffer)))
            {
                var channelStatus = ReadChannelData(ref buffer, context, turnContext);
                if (channelStatus == OperationStatus.Done)
                {
                    read.Frames++;
                    continue;
                }

                if (channelStatus == OperationStatus.InvalidData)
                {
                    read.End = StunConnectionEnd.ProtocolError;
                }

                return 0;
            }

            var status = StunMessageReader.TryReadMessage(ref buffer, _service.Limits, out var message, out var error);
            if (status == OperationStatus.NeedMoreData)
            {
                return 0;
            }

            if (status != OperationStatus.Done)
            {
                _metrics.Drop(context.Transport, error == StunParseError.TooLarge ? StunDropReason.TooLarge : StunDropReason.NotStun);
                if (_logThrottle.TryEnter((int)LogSlot.Garbage, out var suppressed))
                {
                    LogGarbage(context.Client, context.Transport, error, suppressed);
                }

                read.End = StunConnectionEnd.ProtocolError;
                return 0;
            }

            read.Frames++;
            var length = Handle(message, context, turnContext, response, out read.DataPeer);
            if (length > 0)
            {
                read.Wrote = true;
                if (!sink.TryWriteBuffered(response.AsSpan(0, length)))
                {
                    return length;
                }
            }

            if (read.DataPeer is not null)
            {
                // RFC 6062 §5.4: after ConnectionBind the stream is the peer's data; what
                // follows the request in this read already belongs to it.
                return 0;
            }
        }

        return 0;
    }

    /// <summary>
    /// One ChannelData frame (RFC 8656 §12.5), relayed. InvalidData, logged and counted, when it cannot be
    /// relayed: a stream cannot skip a frame it cannot trust, so the connection closes.
    /// </summary>
    private OperationStatus ReadChannelData(ref ReadOnlySequence<byte> buffer, in StunRequestContext context, in TurnContext turnContext)
    {
        // ChannelData means nothing before this connection holds an allocation: close instead of
        // buffering its body.
        if (_turn!.Find(turnContext.FiveTuple) is null)
        {
            _metrics.Drop(context.Transport, StunDropReason.NotStun);
            LogBadChannelDataSampled(context.Client, context.Transport, ChannelDataError.None);
            return OperationStatus.InvalidData;
        }

        var status = ChannelDataReader.TryRead(ref buffer, _turn.ChannelLimits, out var channel, out var data, out var error);
        if (status == OperationStatus.Done)
        {
            RelayChannelData(channel, data, turnContext);
        }
        else if (status != OperationStatus.NeedMoreData)
        {
            _metrics.Drop(context.Transport, StunDropReason.NotStun);
            LogBadChannelDataSampled(context.Client, context.Transport, error);
            status = OperationStatus.InvalidData;
        }

        return status;
    }

    /// <summary>The peer closed its side: cleanly between frames, or in the middle of one.</summary>
    private StunConnectionEnd EndOfInput(in ReadOnlySequence<byte> buffer, StunTransport transport)
    {
        if (buffer.IsEmpty)
        {
            return StunConnectionEnd.PeerClosed;
        }

        _metrics.Drop(transport, StunDropReason.NotStun);
        return StunConnectionEnd.ProtocolError;
    }

    private static byte FirstByte(in ReadOnlySequence<byte> buffer)
    {
        foreach (var segment in buffer)
        {
            if (!segment.IsEmpty)
            {
                return segment.Span[0];
            }
        }

        return 0;
    }

    private void RelayChannelData(ushort channel, in ReadOnlySequence<byte> data, in TurnContext context)
    {
        if (data.IsSingleSegment)
        {
            _turn!.HandleChannelData(channel, data.FirstSpan, context);
            return;
        }

        var length = (int)data.Length;
        var rented = ArrayPool<byte>.Shared.Rent(length);
        data.CopyTo(rented);
        _turn!.HandleChannelData(channel, rented.AsSpan(0, length), context);
        ArrayPool<byte>.Shared.Return(rented);
    }

    /// <summary>Answers one STUN or TURN message into <paramref name="response"/>; returns the response length.</summary>
    private int Handle(in ReadOnlySequence<byte> message, in StunRequestContext context, in TurnContext turnContext, byte[] response, out TcpPeerConnection? dataPeer)
    {
        dataPeer = null;
        var length = (int)message.Length;
        byte[]? rented = null;
        var contiguous = message.IsSingleSegment
            ? message.FirstSpan
            : CopyToContiguous(message, length <= 2048 ? stackalloc byte[2048] : (rented = ArrayPool<byte>.Shared.Rent(length)));
        try
        {
            if (_turn is not null && StunHeader.GetMethod(BinaryPrimitives.ReadUInt16BigEndian(contiguous)) != (ushort)StunMethod.Binding)
            {
                return _turn.HandleMessage(contiguous, turnContext, response, out dataPeer);
            }

            var reply = _service.Handle(contiguous, context, response);
            return reply.HasResponse ? reply.Length : 0;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    private static ReadOnlySpan<byte> CopyToContiguous(in ReadOnlySequence<byte> message, Span<byte> scratch)
    {
        var span = scratch[..(int)message.Length];
        message.CopyTo(span);
        return span;
    }

    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "Refused STUN connection from {Address}: {Limit} connections already open from it (Relay:Stun:Tcp:MaxConnectionsPerIp)")]
    private partial void LogConnectionLimit(IPAddress address, int limit);

    /// <summary>What is left of the message deadline that started at <paramref name="started"/>; at least 1 ms.</summary>
    private TimeSpan Remaining(long started)
    {
        var left = _messageTimeout - _deadlineClock.GetElapsedTime(started);
        return left > TimeSpan.FromMilliseconds(1) ? left : TimeSpan.FromMilliseconds(1);
    }

    private void LogBadChannelDataSampled(StunAddress client, StunTransport transport, ChannelDataError error)
    {
        if (_logThrottle.TryEnter((int)LogSlot.BadChannelData, out var suppressed))
        {
            LogBadChannelData(client, transport, error, suppressed);
        }
    }

    [LoggerMessage(EventId = 3005, Level = LogLevel.Warning, Message = "Refused STUN connection from {Address}: {Limit} connections open on the server (Relay:Stun:Tcp:MaxConnections); {Suppressed} more since the last line (relay_stun_drops_total{{reason=\"connection_cap\"}} counts all)")]
    private partial void LogConnectionCap(IPAddress address, int limit, long suppressed);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Closing STUN {Transport} connection from {Client}: not STUN ({Error}); {Suppressed} more since the last line (relay_stun_drops_total counts all)")]
    private partial void LogGarbage(StunAddress client, StunTransport transport, StunParseError error, long suppressed);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Information, Message = "Closing {Transport} connection from {Client}: ChannelData that cannot be relayed ({Error}; None = no allocation on this connection); {Suppressed} more since the last line")]
    private partial void LogBadChannelData(StunAddress client, StunTransport transport, ChannelDataError error, long suppressed);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Debug, Message = "STUN {Transport} connection from {Remote} ended: {End}; {Suppressed} more since the last line")]
    private partial void LogConnectionEnded(IPEndPoint remote, StunTransport transport, StunConnectionEnd end, long suppressed);

    /// <summary>The sampled log lines, one throttle slot each.</summary>
    private enum LogSlot
    {
        Garbage,
        BadChannelData,
        Ended,
        Cap,
    }

    /// <summary>What handling one read's frames came to.</summary>
    private struct ReadOutcome
    {
        /// <summary>Responses were appended and need a flush.</summary>
        public bool Wrote;

        /// <summary>Not <see cref="StunConnectionEnd.None"/> when the connection must close.</summary>
        public StunConnectionEnd End;

        /// <summary>Set by a successful ConnectionBind: the peer this stream now carries.</summary>
        public TcpPeerConnection? DataPeer;

        /// <summary>Complete messages handled in this read.</summary>
        public int Frames;
    }
}

/// <summary>Why a STUN stream connection ended; feeds logs (and metrics via drop reasons).</summary>
internal enum StunConnectionEnd
{
    None,
    PeerClosed,
    ProtocolError,
    IdleTimeout,
    MessageTimeout,
    LimitExceeded,
    Shutdown,
}
