using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Server.Primitives;
using Relay.Server.Transport.Linux;

namespace Relay.Server.Turn;

/// <summary>
/// The UDP relay's data in both directions: ChannelData and Send indications from clients to peers, and
/// datagrams from peers framed in place for the client. Every path here is allocation-free; what cannot
/// be relayed is dropped and counted, never queued.
/// </summary>
internal sealed class TurnDataPath
{
    private readonly TurnAllocationTable<TurnAllocation, Socket> _allocations;
    private readonly TurnMetrics _metrics;
    private readonly long _bytesPerSecond;
    private readonly TimeProvider _time;

    public TurnDataPath(TurnOptions options, TurnAllocationTable<TurnAllocation, Socket> allocations, TurnMetrics metrics, TimeProvider time)
    {
        _allocations = allocations;
        _metrics = metrics;
        _time = time;
        _bytesPerSecond = options.MaxBytesPerSecondPerAllocation;
    }

    /// <summary>
    /// ChannelData from a client (RFC 8656 §12.6): relayed to the bound peer as a UDP datagram, or
    /// silently discarded when the 5-tuple has no allocation or the channel is not bound.
    /// </summary>
    public void HandleChannelData(ushort channel, ReadOnlySpan<byte> data, in TurnContext context)
    {
        if (_allocations.Find(context.FiveTuple) is not { } allocation)
        {
            _metrics.Drop(TurnDropReason.NoAllocation);
            return;
        }

        var nowMs = _time.GetMonotonicMilliseconds();
        if (!allocation.TryGetChannelPeer(channel, nowMs, out var peer))
        {
            _metrics.Drop(TurnDropReason.NoChannel);
            return;
        }

        SendToPeer(allocation, data, peer, nowMs);
    }

    /// <summary>RFC 8656 §11.2: a Send indication is relayed if it names a permitted peer; otherwise it vanishes.</summary>
    public void HandleSend(in StunMessage request, in TurnContext context)
    {
        if (_allocations.Find(context.FiveTuple) is not { } allocation || allocation.IsTcpRelay)
        {
            _metrics.Drop(TurnDropReason.NoAllocation);
            return;
        }

        if (!request.TryGetAttribute(StunAttributeType.XorPeerAddress, out var peerValue) || !request.TryGetAttribute(StunAttributeType.Data, out var data))
        {
            _metrics.Drop(TurnDropReason.Malformed);
            return;
        }

        StunAttributeReader.TryReadXorAddress(peerValue, request.Header, out var peer);
        var nowMs = _time.GetMonotonicMilliseconds();
        if (!allocation.ServesFamily(peer.Family) || !allocation.HasPermission(peer, nowMs))
        {
            _metrics.Drop(TurnDropReason.NoPermission);
            return;
        }

        SendToPeer(allocation, data, peer, nowMs);
    }

    /// <summary>Called on a relay loop thread for each datagram a peer sent to a relayed address.</summary>
    /// <param name="allocation">Whose relay socket received it.</param>
    /// <param name="slot">The receive slot: <see cref="RelayIoLoop.Headroom"/> free bytes, the datagram, and room for padding.</param>
    /// <param name="length">Datagram length.</param>
    /// <param name="peer">Its source.</param>
    /// <param name="nowMs">The loop's clock for this batch.</param>
    public void OnPeerDatagram(TurnAllocation allocation, Span<byte> slot, int length, in StunAddress peer, long nowMs)
    {
        if (TryFrame(allocation, slot, length, peer, nowMs, out var start, out var frameLength))
        {
            CountSent(allocation.Sink.TrySend(slot.Slice(start, frameLength)), allocation.Sink, length);
        }
    }

    /// <summary>
    /// Turns a datagram from a peer into what the client receives, in place: ChannelData when the peer
    /// has a channel (RFC 8656 §12.6; padded on streams, §12.5), else a Data indication (§11.3). False,
    /// counted, when the peer has no permission or the allocation is over its bandwidth.
    /// </summary>
    /// <param name="start">Where the frame starts in <paramref name="slot"/>.</param>
    /// <param name="frameLength">The frame's length.</param>
    public bool TryFrame(TurnAllocation allocation, Span<byte> slot, int length, in StunAddress peer, long nowMs, out int start, out int frameLength)
    {
        start = frameLength = 0;

        // RFC 8656 §11.3: data from a peer without a permission is discarded.
        if (!allocation.HasPermission(peer, nowMs))
        {
            _metrics.Drop(TurnDropReason.NoPermission);
            return false;
        }

        if (!allocation.TryConsumeBandwidth(length, nowMs, _bytesPerSecond))
        {
            _metrics.Drop(TurnDropReason.Bandwidth);
            return false;
        }

        var channel = allocation.FindChannel(peer, nowMs);
        if (channel != 0)
        {
            start = RelayIoLoop.Headroom - TurnChannel.HeaderLength;
            ChannelDataWriter.WriteHeader(slot[start..], channel, length);
            frameLength = ChannelDataWriter.GetLength(length, allocation.Sink.IsStream);
            slot.Slice(RelayIoLoop.Headroom + length, frameLength - TurnChannel.HeaderLength - length).Clear();
            return true;
        }

        var prefix = StunConstants.HeaderLength + StunConstants.AttributeHeaderLength + 4 + peer.AddressLength + StunConstants.AttributeHeaderLength;
        start = RelayIoLoop.Headroom - prefix;
        var writer = new StunMessageWriter(slot[start..], StunHeader.ComposeType(StunMethod.Data, StunClass.Indication), StunTransactionId.NewRandom());
        writer.WriteXorAddress(StunAttributeType.XorPeerAddress, peer);
        writer.BeginAttribute((ushort)StunAttributeType.Data, length);
        frameLength = writer.Length;
        return true;
    }

    /// <summary>Counts one frame toward the client as relayed, or as shed and why.</summary>
    public void CountSent(bool sent, TurnClientSink sink, int payloadLength)
    {
        if (sent)
        {
            _metrics.Relayed(toPeer: false, payloadLength);
        }
        else
        {
            _metrics.Drop(sink.IsStream ? TurnDropReason.ClientBackpressure : TurnDropReason.SendFailed);
        }
    }

    /// <summary>Counts a peer datagram the kernel truncated: larger than a relay loop receive slot.</summary>
    public void CountTooLarge() => _metrics.Drop(TurnDropReason.TooLarge);

    private void SendToPeer(TurnAllocation allocation, ReadOnlySpan<byte> data, in StunAddress peer, long nowMs)
    {
        if (!allocation.TryConsumeBandwidth(data.Length, nowMs, _bytesPerSecond))
        {
            _metrics.Drop(TurnDropReason.Bandwidth);
            return;
        }

        Span<byte> address = stackalloc byte[LinuxEpoll.SockaddrIn6Length];
        var socket = allocation.SocketFor(peer.Family);
        var addressLength = LinuxSocketAddress.Write(peer, socket.AddressFamily, address);
        if (!LinuxEpoll.TrySendTo(socket.SafeHandle, data, address[..addressLength]))
        {
            _metrics.Drop(TurnDropReason.SendFailed);
            return;
        }

        _metrics.Relayed(toPeer: true, data.Length);
    }
}
