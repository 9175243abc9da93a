using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Relay.Protocol.Stun;
using Relay.Stun;

namespace Relay.Turn;

/// <summary>
/// Watches relay sockets with one epoll instance on one dedicated thread and hands every datagram a
/// peer sends to <see cref="TurnRelay.OnPeerDatagram"/>. Datagrams are received with recvmmsg into
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

    private readonly TurnRelay _relay;
    private readonly int _batchSize;
    private readonly int _slotSize;
    private readonly int _epoll;
    private readonly Thread _thread;
    private readonly ConcurrentQueue<TurnAllocation> _retired = new();
    private readonly LinuxUdp.IoVec* _sendIov;
    private readonly LinuxUdp.MMsgHdr* _sendHeaders;
    private readonly int[] _sendLengths;
    private volatile bool _stopping;

    public RelayIoLoop(TurnRelay relay, int index, int batchSize, int maxDatagram)
    {
        _relay = relay;
        _batchSize = batchSize;

        // Headroom in front, and up to 3 bytes of padding behind the largest datagram.
        _slotSize = (Headroom + maxDatagram + 4 + 63) & ~63;
        _epoll = LinuxEpoll.Create(LinuxEpoll.EpollCloexec);
        if (_epoll < 0)
        {
            throw new IOException($"epoll_create1 failed (errno {Marshal.GetLastPInvokeError()})");
        }

        _sendIov = (LinuxUdp.IoVec*)NativeMemory.AllocZeroed((nuint)(batchSize * sizeof(LinuxUdp.IoVec)));
        _sendHeaders = (LinuxUdp.MMsgHdr*)NativeMemory.AllocZeroed((nuint)(batchSize * sizeof(LinuxUdp.MMsgHdr)));
        _sendLengths = new int[batchSize];
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
    }

    /// <summary>
    /// One sendmmsg from the client's listening socket for every frame gathered from one recvmmsg: the
    /// per-call cost, most of a small datagram's, is paid once per batch.
    /// </summary>
    private void SendBatch(UdpClientSink sink, int count)
    {
        var handle = sink.SocketHandle;
        var added = false;
        var sent = 0;
        try
        {
            handle.DangerousAddRef(ref added);
            fixed (byte* address = sink.Address)
            {
                for (var i = 0; i < count; i++)
                {
                    _sendHeaders[i].Header = new LinuxUdp.MsgHdr { Name = address, NameLength = (uint)sink.Address.Length, Iov = _sendIov + i, IovLength = 1 };
                }

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
                        _relay.CountSent(false, sink, _sendLengths[sent]);
                        sent++;
                        continue;
                    }

                    for (var i = sent; i < sent + result; i++)
                    {
                        _relay.CountSent(true, sink, _sendLengths[i]);
                    }

                    sent += result;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            for (var i = sent; i < count; i++)
            {
                _relay.CountSent(false, sink, _sendLengths[i]);
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
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
        var buffers = (byte*)NativeMemory.AlignedAlloc((nuint)(_batchSize * _slotSize), 64);
        try
        {
            for (var i = 0; i < _batchSize; i++)
            {
                iovs[i] = new LinuxUdp.IoVec { Base = buffers + (i * _slotSize) + Headroom, Length = (nuint)(_slotSize - Headroom - 4) };
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
                        Drain(binding.Allocation, binding.Socket, headers, names, buffers);
                    }
                }
            }
        }
        catch (Exception exception)
        {
            _relay.OnLoopFailed(exception);
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

    private void Drain(TurnAllocation allocation, System.Net.Sockets.Socket socket, LinuxUdp.MMsgHdr* headers, byte* names, byte* buffers)
    {
        var fd = (int)socket.Handle;
        var family = socket.AddressFamily;
        for (var batch = 0; batch < MaxBatchesPerSocket; batch++)
        {
            for (var i = 0; i < _batchSize; i++)
            {
                headers[i].Header.Name = names + (i * LinuxUdp.SocketAddressSlot);
                headers[i].Header.NameLength = LinuxUdp.SocketAddressSlot;
                headers[i].Header.Flags = 0;
            }

            var received = LinuxUdp.RecvMmsg(fd, headers, (uint)_batchSize, LinuxEpoll.MsgDontWait, null);
            if (received <= 0)
            {
                return;
            }

            var nowMs = Environment.TickCount64;
            var sink = allocation.Sink;
            var udpSink = sink as UdpClientSink;
            var framed = 0;
            for (var i = 0; i < received; i++)
            {
                var slot = new Span<byte>(buffers + (i * _slotSize), _slotSize);
                if ((headers[i].Header.Flags & LinuxUdp.MsgTrunc) != 0)
                {
                    _relay.Metrics.Drop(TurnDropReason.TooLarge);
                    continue;
                }

                var length = (int)headers[i].Length;
                var peer = StunAddress.FromNativeSocketAddress(new ReadOnlySpan<byte>(names + (i * LinuxUdp.SocketAddressSlot), (int)headers[i].Header.NameLength), family);
                if (!_relay.TryFrame(allocation, slot, length, peer, nowMs, out var start, out var frameLength))
                {
                    continue;
                }

                if (udpSink is null)
                {
                    _relay.CountSent(sink.TrySend(slot.Slice(start, frameLength)), sink, length);
                    continue;
                }

                // Everything this socket received goes to one client: gather it for one sendmmsg.
                _sendIov[framed] = new LinuxUdp.IoVec { Base = buffers + (i * _slotSize) + start, Length = (nuint)frameLength };
                _sendLengths[framed] = length;
                framed++;
            }

            if (udpSink is not null && framed > 0)
            {
                SendBatch(udpSink, framed);
            }

            if (received < _batchSize)
            {
                return;
            }
        }
    }

    /// <summary>What one epoll registration names: a relay socket and the allocation it belongs to.</summary>
    private sealed record RelayBinding(TurnAllocation Allocation, System.Net.Sockets.Socket Socket);
}
