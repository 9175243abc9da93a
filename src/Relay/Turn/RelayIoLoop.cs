using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Relay.Protocol.Stun;
using Relay.Server.Primitives;
using Relay.Server.Transport.Linux;

namespace Relay.Server.Turn;

/// <summary>
/// Watches relay sockets with one epoll instance on one dedicated thread and hands every datagram a
/// peer sends to <see cref="TurnDataPath"/>. Datagrams are received with recvmmsg into
/// native buffers that leave <see cref="Headroom"/> bytes in front, so the ChannelData or Data
/// indication header is written in place and the payload is copied only once more, into the socket.
/// </summary>
/// <remarks>
/// Sockets are closed only on this thread, after they left the epoll set: a descriptor number closed
/// elsewhere could be reused by a new socket while this thread still reads from the old number.
/// </remarks>
internal sealed unsafe class RelayIoLoop : IDisposable
{
    /// <summary>Room for the largest prefix: STUN header, XOR-PEER-ADDRESS (IPv6) and DATA's header.</summary>
    public const int Headroom = StunConstants.HeaderLength + StunConstants.AttributeHeaderLength + 20 + StunConstants.AttributeHeaderLength;

    private const int MaxEvents = 256;
    private const int WaitTimeoutMs = 200;

    // Drain at most this many batches per ready socket per wakeup, so one busy peer cannot starve
    // the others; level-triggered epoll reports the socket again.
    private const int MaxBatchesPerSocket = 4;

    // Receive slots per wake-up, in recvmmsg batches: frames wait in them until the one sendmmsg.
    private const int GatherBatches = 4;

    private readonly TurnDataPath _dataPath;
    private readonly ILogger _logger;
    private readonly int _batchSize;
    private readonly int _slotSize;
    private readonly int _epoll;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<TurnAllocation> _retired = new();
    // Frames for UDP clients are gathered across every socket one epoll wake-up reports and leave in
    // one sendmmsg: all clients of a listen endpoint share its first socket (same source address and
    // port as the others of its SO_REUSEPORT group), so the per-call cost is paid once per wake-up.
    private readonly int _gatherSlots;
    private readonly LinuxUdp.IoVec* _sendIov;
    private readonly LinuxUdp.MMsgHdr* _sendHeaders;
    private readonly byte* _sendNames;
    private readonly int[] _sendLengths;
    private readonly UdpClientSink?[] _sendSinks;
    private System.Runtime.InteropServices.SafeHandle? _pendingSocket;
    private int _pending;
    private int _used;
    private readonly TimeProvider _time;
    private volatile bool _stopping;

    public RelayIoLoop(TurnDataPath dataPath, TimeProvider time, ILogger logger, int index, int batchSize, int maxDatagram)
    {
        _dataPath = dataPath;
        _time = time;
        _logger = logger;
        _batchSize = batchSize;

        // Headroom in front, and up to 3 bytes of padding behind the largest datagram.
        _slotSize = (Headroom + maxDatagram + 4 + 63) & ~63;
        _epoll = LinuxEpoll.Create(LinuxEpoll.EpollCloexec);
        if (_epoll < 0)
        {
            throw new IOException($"epoll_create1 failed (errno {Marshal.GetLastPInvokeError()})");
        }

        _gatherSlots = batchSize * GatherBatches;
        _sendIov = (LinuxUdp.IoVec*)NativeMemory.AllocZeroed((nuint)(_gatherSlots * sizeof(LinuxUdp.IoVec)));
        _sendHeaders = (LinuxUdp.MMsgHdr*)NativeMemory.AllocZeroed((nuint)(_gatherSlots * sizeof(LinuxUdp.MMsgHdr)));
        _sendNames = (byte*)NativeMemory.AllocZeroed((nuint)(_gatherSlots * LinuxUdp.SocketAddressSlot));
        _sendLengths = new int[_gatherSlots];
        _sendSinks = new UdpClientSink?[_gatherSlots];
        _thread = new Thread(Run) { IsBackground = true, Name = $"turn-relay-{index}" };
        _thread.Start();
    }

    /// <summary>Starts watching an allocation's relay socket(s).</summary>
    public void Add(TurnAllocation allocation)
    {
        allocation.Loop = this;
        allocation.LoopHandle = Register(new RelayBinding(allocation, allocation.RelaySocket));
        if (allocation.SecondarySocket is { } secondary)
        {
            allocation.SecondaryLoopHandle = Register(new RelayBinding(allocation, secondary));
        }
    }

    /// <summary>Stops watching; the sockets are closed and the handles freed on the loop thread.</summary>
    public void Remove(TurnAllocation allocation)
    {
        var slot = stackalloc byte[16];
        LinuxEpoll.Control(_epoll, LinuxEpoll.EpollCtlDel, (int)allocation.RelaySocket.Handle, slot);
        if (allocation.SecondarySocket is { } secondary)
        {
            LinuxEpoll.Control(_epoll, LinuxEpoll.EpollCtlDel, (int)secondary.Handle, slot);
        }

        _retired.Enqueue(allocation);
    }

    private GCHandle Register(RelayBinding binding)
    {
        var handle = GCHandle.Alloc(binding);
        var slot = stackalloc byte[16];
        LinuxEpoll.WriteEvent(slot, LinuxEpoll.EpollIn, (ulong)GCHandle.ToIntPtr(handle));
        if (LinuxEpoll.Control(_epoll, LinuxEpoll.EpollCtlAdd, (int)binding.Socket.Handle, slot) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Free();
            throw new IOException($"epoll_ctl(ADD) failed (errno {errno})");
        }

        return handle;
    }

    public void Dispose()
    {
        _stopping = true;
        _thread.Join();
        RetirePending();
        LinuxEpoll.Close(_epoll);
        NativeMemory.Free(_sendIov);
        NativeMemory.Free(_sendHeaders);
        NativeMemory.Free(_sendNames);
    }

    /// <summary>Sends every gathered UDP frame with one sendmmsg (more only when the kernel takes part of them).</summary>
    private void FlushPending()
    {
        if (_pending == 0)
        {
            return;
        }

        var handle = _pendingSocket!;
        var count = _pending;
        _pending = 0;
        var added = false;
        var sent = 0;
        try
        {
            handle.DangerousAddRef(ref added);
            var fd = (int)handle.DangerousGetHandle();
            while (sent < count)
            {
                var result = LinuxUdp.SendMmsg(fd, _sendHeaders + sent, (uint)(count - sent), LinuxEpoll.MsgDontWait);
                if (result <= 0)
                {
                    if (result < 0 && Marshal.GetLastPInvokeError() == LinuxUdp.EIntr)
                    {
                        continue;
                    }

                    // A full socket buffer (EAGAIN) or an error for the first of the rest: shed it, go on.
                    _dataPath.CountSent(false, _sendSinks[sent]!, _sendLengths[sent]);
                    sent++;
                    continue;
                }

                for (var i = sent; i < sent + result; i++)
                {
                    _dataPath.CountSent(true, _sendSinks[i]!, _sendLengths[i]);
                }

                sent += result;
            }
        }
        catch (ObjectDisposedException)
        {
            for (var i = sent; i < count; i++)
            {
                _dataPath.CountSent(false, _sendSinks[i]!, _sendLengths[i]);
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }

            Array.Clear(_sendSinks, 0, count);
        }
    }

    private void Gather(UdpClientSink sink, byte* frame, int frameLength, int payloadLength)
    {
        var socket = sink.SocketHandle;
        if (_pending > 0 && !ReferenceEquals(socket, _pendingSocket))
        {
            // Another listen endpoint (IPv6 next to IPv4, or a second address): its own sendmmsg.
            FlushPending();
        }

        var name = _sendNames + (_pending * LinuxUdp.SocketAddressSlot);
        var address = sink.Address;
        address.CopyTo(new Span<byte>(name, LinuxUdp.SocketAddressSlot));
        _sendIov[_pending] = new LinuxUdp.IoVec { Base = frame, Length = (nuint)frameLength };
        _sendHeaders[_pending].Header = new LinuxUdp.MsgHdr { Name = name, NameLength = (uint)address.Length, Iov = _sendIov + _pending, IovLength = 1 };
        _sendLengths[_pending] = payloadLength;
        _sendSinks[_pending] = sink;
        _pendingSocket = socket;
        _pending++;
    }

    private void RetirePending()
    {
        while (_retired.TryDequeue(out var allocation))
        {
            allocation.RelaySocket.Dispose();
            allocation.SecondarySocket?.Dispose();
            if (allocation.LoopHandle.IsAllocated)
            {
                allocation.LoopHandle.Free();
            }

            if (allocation.SecondaryLoopHandle.IsAllocated)
            {
                allocation.SecondaryLoopHandle.Free();
            }
        }
    }

    private void Run()
    {
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * LinuxEpoll.EventSize));
        var headers = (LinuxUdp.MMsgHdr*)NativeMemory.AllocZeroed((nuint)(_batchSize * sizeof(LinuxUdp.MMsgHdr)));
        var iovs = (LinuxUdp.IoVec*)NativeMemory.AllocZeroed((nuint)(_batchSize * sizeof(LinuxUdp.IoVec)));
        var names = (byte*)NativeMemory.AllocZeroed((nuint)(_batchSize * LinuxUdp.SocketAddressSlot));
        var buffers = (byte*)NativeMemory.AlignedAlloc((nuint)(_gatherSlots * _slotSize), 64);
        try
        {
            for (var i = 0; i < _batchSize; i++)
            {
                headers[i].Header.Iov = iovs + i;
                headers[i].Header.IovLength = 1;
            }

            while (!_stopping)
            {
                // Events returned below cannot name an allocation retired here: it left the set first.
                RetirePending();
                var ready = LinuxEpoll.Wait(_epoll, events, MaxEvents, WaitTimeoutMs);
                for (var e = 0; e < ready; e++)
                {
                    var handle = GCHandle.FromIntPtr((nint)LinuxEpoll.ReadEventData(events + (e * LinuxEpoll.EventSize)));
                    if (handle.Target is RelayBinding binding && !binding.Allocation.IsClosed)
                    {
                        Drain(binding.Allocation, binding.Socket, headers, iovs, names, buffers);
                    }
                }

                FlushPending();
                _used = 0;
            }
        }
        catch (Exception exception)
        {
            TurnLog.LogLoopFailed(_logger, exception);
        }
        finally
        {
            NativeMemory.Free(events);
            NativeMemory.Free(headers);
            NativeMemory.Free(iovs);
            NativeMemory.Free(names);
            NativeMemory.AlignedFree(buffers);
        }
    }

    private void Drain(TurnAllocation allocation, System.Net.Sockets.Socket socket, LinuxUdp.MMsgHdr* headers, LinuxUdp.IoVec* iovs, byte* names, byte* buffers)
    {
        var fd = (int)socket.Handle;
        var family = socket.AddressFamily;
        var udpSink = allocation.Sink as UdpClientSink;
        for (var batch = 0; batch < MaxBatchesPerSocket; batch++)
        {
            if (_used + _batchSize > _gatherSlots)
            {
                // Every slot holds a frame waiting for the sendmmsg: send them, then reuse the slots.
                FlushPending();
                _used = 0;
            }

            for (var i = 0; i < _batchSize; i++)
            {
                iovs[i] = new LinuxUdp.IoVec { Base = buffers + ((_used + i) * _slotSize) + Headroom, Length = (nuint)(_slotSize - Headroom - 4) };
                headers[i].Header.Name = names + (i * LinuxUdp.SocketAddressSlot);
                headers[i].Header.NameLength = LinuxUdp.SocketAddressSlot;
                headers[i].Header.Flags = 0;
            }

            var received = LinuxUdp.RecvMmsg(fd, headers, (uint)_batchSize, LinuxEpoll.MsgDontWait, null);
            if (received <= 0)
            {
                return;
            }

            var nowMs = _time.GetMonotonicMilliseconds();
            for (var i = 0; i < received; i++)
            {
                var slotStart = buffers + ((_used + i) * _slotSize);
                var slot = new Span<byte>(slotStart, _slotSize);
                if ((headers[i].Header.Flags & LinuxUdp.MsgTrunc) != 0)
                {
                    _dataPath.CountTooLarge();
                    continue;
                }

                var length = (int)headers[i].Length;
                var peer = StunAddress.FromNativeSocketAddress(new ReadOnlySpan<byte>(names + (i * LinuxUdp.SocketAddressSlot), (int)headers[i].Header.NameLength), family);
                if (udpSink is null)
                {
                    // A stream client: written to its connection now (there is no batch send for a pipe).
                    _dataPath.OnPeerDatagram(allocation, slot, length, peer, nowMs);
                }
                else if (_dataPath.TryFrame(allocation, slot, length, peer, nowMs, out var start, out var frameLength))
                {
                    Gather(udpSink, slotStart + start, frameLength, length);
                }
            }

            _used += received;
            if (received < _batchSize)
            {
                return;
            }
        }
    }

    /// <summary>What one epoll registration names: a relay socket and the allocation it belongs to.</summary>
    private sealed record RelayBinding(TurnAllocation Allocation, System.Net.Sockets.Socket Socket);
}
