using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;

namespace Relay.DeviceClient.Nat;

/// <summary>The socket: one receive loop that demultiplexes STUN and ChannelData, and the send paths.</summary>
public sealed partial class TurnClient
{
    /// <summary>Largest payload <see cref="SendAsync"/> takes: what a Send indication can carry (RFC 8656 §11.1) with room for an IPv6 peer.</summary>
    public const int MaxPayloadLength = 65500;

    // One whole frame always fits: STUN at most 20 + 65,532 bytes, ChannelData 4 + 65,535 rounded up to 65,540.
    private const int StreamBufferSize = StunConstants.HeaderLength + 65532;

    // From the server we accept RFC 5766's channel range too: the numbers are ours, bound by this client.
    private static readonly ChannelDataLimits InboundChannelLimits = ChannelDataLimits.Default with { AcceptRfc5766Channels = true };

    private readonly Socket _socket;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private Task? _receiveLoop;
    private Exception? _connectionError;

    /// <summary>
    /// Sends <paramref name="data"/> to <paramref name="peer"/> through the relay: as ChannelData when a
    /// channel is bound to the peer (RFC 8656 §12.5, padded over TCP), otherwise as a Send indication
    /// (§11.1). A permission for the peer's address must exist (§9): create one first.
    /// </summary>
    /// <exception cref="InvalidOperationException">No permission or channel for the peer.</exception>
    public async ValueTask SendAsync(IPEndPoint peer, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(peer);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(data.Length, MaxPayloadLength, nameof(data));
        peer = Normalize(peer);
        var binding = _peers.Route(peer, out var permitted);
        if (binding is null && !permitted)
        {
            throw new InvalidOperationException($"No permission for {peer.Address}: call CreatePermissionAsync or BindChannelAsync first (RFC 8656 §9).");
        }

        var buffer = ArrayPool<byte>.Shared.Rent(data.Length + 64);
        try
        {
            var length = binding is not null
                ? ChannelDataWriter.Write(buffer, binding.Number, data.Span, pad: Transport == TurnTransport.Tcp)
                : WriteSendIndication(buffer, peer, data.Span);
            await SendRawAsync(buffer.AsMemory(0, length), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    // RFC 8656 §11.1: a Send indication with XOR-PEER-ADDRESS and DATA; indications are never authenticated.
    private static int WriteSendIndication(Span<byte> buffer, IPEndPoint peer, ReadOnlySpan<byte> data)
    {
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Send, StunClass.Indication), StunTransactionId.NewRandom());
        writer.WriteXorAddress(StunAttributeType.XorPeerAddress, StunAddress.FromEndPoint(peer));
        writer.WriteAttribute(StunAttributeType.Data, data);
        return writer.Length;
    }

    private async Task ConnectAsync(CancellationToken cancellationToken)
    {
        if (Transport == TurnTransport.Udp)
        {
            // A connected UDP socket: the kernel delivers only the server's datagrams, so nobody else can inject any.
            _socket.Bind(new IPEndPoint(Server.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
            await _socket.ConnectAsync(Server, cancellationToken).ConfigureAwait(false);
            _receiveLoop = Task.Run(() => ReceiveDatagramsAsync(_stop.Token), CancellationToken.None);
        }
        else
        {
            _socket.NoDelay = true;
            await _socket.ConnectAsync(Server, cancellationToken).ConfigureAwait(false);
            _receiveLoop = Task.Run(() => ReceiveStreamAsync(_stop.Token), CancellationToken.None);
        }
    }

    private async Task SendRawAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken)
    {
        if (Transport == TurnTransport.Udp)
        {
            try
            {
                await _socket.SendAsync(message, SocketFlags.None, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset)
            {
                // An ICMP error from an earlier datagram surfaced here; this one is lost like any UDP datagram.
            }

            return;
        }

        // Stream messages must not interleave.
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            while (!message.IsEmpty)
            {
                var sent = await _socket.SendAsync(message, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                message = message[sent..];
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReceiveDatagramsAsync(CancellationToken cancellationToken)
    {
        var buffer = new byte[65536];
        try
        {
            while (true)
            {
                int received;
                try
                {
                    received = await _socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset)
                {
                    // ICMP port unreachable for an earlier send (server not up yet): retransmission covers it.
                    continue;
                }

                HandleDatagram(buffer.AsSpan(0, received));
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    // RFC 8656 §12 Table 3 / RFC 7983: the first two bits tell STUN (00) from ChannelData (01).
    private void HandleDatagram(ReadOnlySpan<byte> datagram)
    {
        if (datagram.IsEmpty)
        {
            Interlocked.Increment(ref _dropped);
            return;
        }

        if ((datagram[0] & 0xC0) == 0)
        {
            HandleStun(datagram);
        }
        else if (ChannelDataReader.TryRead(datagram, InboundChannelLimits, out var channel, out var data, out _))
        {
            HandleChannelData(channel, data);
        }
        else
        {
            // RFC 8656 §12.6: malformed ChannelData is silently discarded.
            Interlocked.Increment(ref _dropped);
        }
    }

    private async Task ReceiveStreamAsync(CancellationToken cancellationToken)
    {
        var buffer = new byte[StreamBufferSize];
        var filled = 0;
        try
        {
            while (true)
            {
                var received = await _socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                if (received == 0)
                {
                    Fail(filled == 0 ? new IOException("The TURN server closed the connection.") : new TurnProtocolException("The TURN server closed the connection in the middle of a message."));
                    return;
                }

                filled += received;
                var consumed = DrainFrames(buffer, filled);
                if (consumed < 0)
                {
                    // A stream that is neither STUN nor ChannelData has lost its framing: nothing after it can be trusted.
                    Fail(new TurnProtocolException("The TURN server sent bytes that are neither STUN nor ChannelData."));
                    return;
                }

                Buffer.BlockCopy(buffer, consumed, buffer, 0, filled - consumed);
                filled -= consumed;
            }
        }
        catch (Exception e)
        {
            Fail(e);
        }
    }

    /// <summary>Handles every complete frame in <paramref name="buffer"/>; returns the bytes consumed, or -1 for a broken stream.</summary>
    private int DrainFrames(byte[] buffer, int filled)
    {
        var sequence = new ReadOnlySequence<byte>(buffer, 0, filled);
        while (!sequence.IsEmpty)
        {
            var first = sequence.FirstSpan[0];
            OperationStatus status;
            if ((first & 0xC0) == 0)
            {
                // RFC 8489 §6.2.2: the header's length delimits STUN messages on a stream.
                status = StunMessageReader.TryReadMessage(ref sequence, ResponseLimits, out var frame, out _);
                if (status == OperationStatus.Done)
                {
                    HandleStun(frame.FirstSpan);
                }
            }
            else
            {
                // RFC 8656 §12.5: ChannelData padded to a multiple of four over a stream.
                status = ChannelDataReader.TryRead(ref sequence, InboundChannelLimits, out var channel, out var data, out _);
                if (status == OperationStatus.Done)
                {
                    HandleChannelData(channel, data.FirstSpan);
                }
            }

            if (status == OperationStatus.NeedMoreData)
            {
                break;
            }

            if (status == OperationStatus.InvalidData)
            {
                return -1;
            }
        }

        return filled - (int)sequence.Length;
    }

    private void HandleStun(ReadOnlySpan<byte> raw)
    {
        if (StunMessageReader.TryParse(raw, ResponseLimits, out var message, out _) != OperationStatus.Done || message.Header.IsClassicRfc3489)
        {
            Interlocked.Increment(ref _dropped);
            return;
        }

        switch (message.Header.Class)
        {
            case StunClass.SuccessResponse or StunClass.ErrorResponse:
                CompleteTransaction(message);
                break;
            case StunClass.Indication when message.Header.Method == (ushort)StunMethod.Data:
                HandleDataIndication(message);
                break;
            default:
                Interlocked.Increment(ref _dropped);
                break;
        }
    }

    // RFC 8656 §11.4: a Data indication without XOR-PEER-ADDRESS or DATA is discarded.
    private void HandleDataIndication(in StunMessage message)
    {
        if (!message.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue)
            || !StunAttributeReader.TryReadXorAddress(peerValue, message.Header, out var peer)
            || !message.TryGetAttribute(StunAttributeType.Data, out var data))
        {
            Interlocked.Increment(ref _dropped);
            return;
        }

        if (Deliver(new TurnPeerData(peer.ToIPEndPoint(), data.ToArray(), ViaChannel: false)))
        {
            Interlocked.Increment(ref _receivedViaIndication);
        }
    }

    // RFC 8656 §12.6: ChannelData on a channel this client never bound is discarded.
    private void HandleChannelData(ushort channel, ReadOnlySpan<byte> data)
    {
        var binding = _peers.Channel(channel);
        if (binding is null)
        {
            Interlocked.Increment(ref _dropped);
            return;
        }

        if (Deliver(new TurnPeerData(binding.Peer, data.ToArray(), ViaChannel: true)))
        {
            Interlocked.Increment(ref _receivedViaChannel);
        }
    }

    // The one copy of a payload, out of the receive buffer into memory the application owns.
    private bool Deliver(TurnPeerData item)
    {
        if (_received.Writer.TryWrite(item))
        {
            return true;
        }

        Interlocked.Increment(ref _dropped);
        return false;
    }

    private void Fail(Exception error)
    {
        var disposing = Volatile.Read(ref _disposed) != 0;
        lock (_pendingLock)
        {
            _connectionError ??= error;
        }

        FailPending(disposing ? new ObjectDisposedException(nameof(TurnClient)) : error);
        _received.Writer.TryComplete(disposing ? null : error);
    }
}
