using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Rendezvous.Stun;
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
    private readonly ILogger<StunTurnTcpConnectionHandler> _logger;
    private readonly ConcurrentDictionary<IPAddress, int> _connectionsPerIp = new();

    public StunTurnTcpConnectionHandler(StunBindingService service, TurnRelay turn, StunMetrics metrics, IOptions<StunOptions> options, ILogger<StunTurnTcpConnectionHandler> logger)
    {
        _service = service;
        _turn = turn.Enabled ? turn : null;
        _metrics = metrics;
        _options = options.Value.Tcp;
        _logger = logger;
    }

    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var transport = connection.Features.Get<ITlsHandshakeFeature>() is null ? StunTransport.Tcp : StunTransport.Tls;
        if (connection.RemoteEndPoint is not IPEndPoint remote || connection.LocalEndPoint is not IPEndPoint local)
        {
            return;
        }

        var ip = remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address;
        if (!TryEnter(ip))
        {
            _metrics.Drop(transport, StunDropReason.ConnectionLimit);
            LogConnectionLimit(ip, _options.MaxConnectionsPerIp);
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
            Leave(ip);
            LogConnectionEnded(remote, transport, end);
            await connection.Transport.Input.CompleteAsync().ConfigureAwait(false);
            await connection.Transport.Output.CompleteAsync().ConfigureAwait(false);
        }
    }

    private async Task<StunConnectionEnd> ServeAsync(ConnectionContext connection, StunRequestContext context)
    {
        var input = connection.Transport.Input;
        var sink = new StreamClientSink(connection.Transport.Output);
        var turnContext = new TurnContext(context.Client, context.Local, context.Transport, null, sink);
        var limits = _service.Limits;
        var response = ArrayPool<byte>.Shared.Rent(_service.ResponseBufferSize);
        using var idle = new CancellationTokenSource();
        var idleTimeout = TimeSpan.FromSeconds(_options.IdleTimeoutSeconds);
        try
        {
            while (true)
            {
                idle.CancelAfter(idleTimeout);
                ReadResult result;
                try
                {
                    result = await input.ReadAsync(idle.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (idle.IsCancellationRequested)
                {
                    _metrics.Drop(context.Transport, StunDropReason.IdleTimeout);
                    return StunConnectionEnd.IdleTimeout;
                }

                if (!idle.TryReset())
                {
                    return StunConnectionEnd.IdleTimeout;
                }

                var buffer = result.Buffer;
                var wrote = false;
                var end = StunConnectionEnd.None;
                TcpPeerConnection? dataPeer = null;
                try
                {
                    // Drain every complete frame in this read before flushing once (Kestrel's loop shape).
                    while (!buffer.IsEmpty)
                    {
                        if (_turn is not null && TurnChannel.LooksLikeChannelData(FirstByte(buffer)))
                        {
                            // ChannelData means nothing before this connection holds an allocation, and a
                            // stream cannot skip a frame it cannot trust: close instead of buffering its body.
                            if (_turn.Find(turnContext.FiveTuple) is null)
                            {
                                _metrics.Drop(context.Transport, StunDropReason.NotStun);
                                LogBadChannelData(context.Client, context.Transport, ChannelDataError.None);
                                end = StunConnectionEnd.ProtocolError;
                                break;
                            }

                            var channelStatus = ChannelDataReader.TryRead(ref buffer, _turn.ChannelLimits, out var channel, out var data, out var channelError);
                            if (channelStatus == OperationStatus.NeedMoreData)
                            {
                                break;
                            }

                            if (channelStatus != OperationStatus.Done)
                            {
                                _metrics.Drop(context.Transport, StunDropReason.NotStun);
                                LogBadChannelData(context.Client, context.Transport, channelError);
                                end = StunConnectionEnd.ProtocolError;
                                break;
                            }

                            RelayChannelData(channel, data, turnContext);
                            continue;
                        }

                        var status = StunMessageReader.TryReadMessage(ref buffer, limits, out var message, out var error);
                        if (status == OperationStatus.NeedMoreData)
                        {
                            break;
                        }

                        if (status != OperationStatus.Done)
                        {
                            _metrics.Drop(context.Transport, error == StunParseError.TooLarge ? StunDropReason.TooLarge : StunDropReason.NotStun);
                            LogGarbage(context.Client, context.Transport, error);
                            end = StunConnectionEnd.ProtocolError;
                            break;
                        }

                        var length = Handle(message, context, turnContext, response, out dataPeer);
                        if (length > 0)
                        {
                            wrote = true;
                            if (!sink.TryWriteBuffered(response.AsSpan(0, length)) && !await sink.SendAsync(response.AsMemory(0, length)).ConfigureAwait(false))
                            {
                                return StunConnectionEnd.PeerClosed;
                            }
                        }

                        if (dataPeer is not null)
                        {
                            // RFC 6062 §5.4: after ConnectionBind the stream is the peer's data; what
                            // follows the request in this read already belongs to it.
                            break;
                        }
                    }

                    if (end == StunConnectionEnd.None && dataPeer is null && result.IsCompleted)
                    {
                        if (!buffer.IsEmpty)
                        {
                            // The peer closed in the middle of a message.
                            _metrics.Drop(context.Transport, StunDropReason.NotStun);
                            end = StunConnectionEnd.ProtocolError;
                        }
                        else
                        {
                            end = StunConnectionEnd.PeerClosed;
                        }
                    }
                }
                finally
                {
                    if (dataPeer is null)
                    {
                        input.AdvanceTo(buffer.Start, buffer.End);
                    }
                    else
                    {
                        // Not examined: the relay's first read must see bytes that are already here.
                        input.AdvanceTo(buffer.Start);
                    }
                }

                if (wrote && !await sink.FlushAsync().ConfigureAwait(false))
                {
                    return StunConnectionEnd.PeerClosed;
                }

                if (dataPeer is not null)
                {
                    sink.Complete();
                    await _turn!.RelayTcpDataAsync(dataPeer, input, connection.Transport.Output).ConfigureAwait(false);
                    return StunConnectionEnd.PeerClosed;
                }

                if (end != StunConnectionEnd.None)
                {
                    return end;
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

    private bool TryEnter(IPAddress ip)
    {
        while (true)
        {
            var current = _connectionsPerIp.GetOrAdd(ip, 0);
            if (current >= _options.MaxConnectionsPerIp)
            {
                return false;
            }

            if (_connectionsPerIp.TryUpdate(ip, current + 1, current))
            {
                return true;
            }
        }
    }

    private void Leave(IPAddress ip)
    {
        while (_connectionsPerIp.TryGetValue(ip, out var current))
        {
            if (current <= 1 ? _connectionsPerIp.TryRemove(new KeyValuePair<IPAddress, int>(ip, current)) : _connectionsPerIp.TryUpdate(ip, current - 1, current))
            {
                return;
            }
        }
    }

    [LoggerMessage(EventId = 3001, Level = LogLevel.Warning, Message = "Refused STUN connection from {Address}: {Limit} connections already open from it (Relay:Stun:Tcp:MaxConnectionsPerIp)")]
    private partial void LogConnectionLimit(IPAddress address, int limit);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Closing STUN {Transport} connection from {Client}: not STUN ({Error})")]
    private partial void LogGarbage(StunAddress client, StunTransport transport, StunParseError error);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Information, Message = "Closing {Transport} connection from {Client}: ChannelData that cannot be relayed ({Error}; None = no allocation on this connection)")]
    private partial void LogBadChannelData(StunAddress client, StunTransport transport, ChannelDataError error);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Debug, Message = "STUN {Transport} connection from {Remote} ended: {End}")]
    private partial void LogConnectionEnded(IPEndPoint remote, StunTransport transport, StunConnectionEnd end);
}

/// <summary>Why a STUN stream connection ended; feeds logs (and metrics via drop reasons).</summary>
internal enum StunConnectionEnd
{
    None,
    PeerClosed,
    ProtocolError,
    IdleTimeout,
    LimitExceeded,
    Shutdown,
}
