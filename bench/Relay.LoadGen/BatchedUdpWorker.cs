using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Relay.Server.Transport.Linux;
using static Relay.LoadGen.LinuxNative;
using static Relay.Server.Transport.Linux.LinuxUdp;

namespace Relay.LoadGen;

/// <summary>
/// Linux batched UDP mode: one dedicated blocking thread drives a set of UDP sockets (each its own
/// source port) through one epoll instance, reading every ready socket with one
/// <c>recvmmsg(2)</c> and sending all the replacement requests for it with one <c>sendmmsg(2)</c>.
/// Everything the thread touches is owned by it, so there is no lock; requests, iovecs, message
/// headers and receive buffers live in one native block allocated up front (nothing is allocated
/// per packet). Matching, loss and timeout rules are exactly those of the portable mode
/// (<see cref="LoadWorker"/>): a Binding success from the target carrying an outstanding
/// transaction id, replaced after <c>--timeout-ms</c>.
/// </summary>
internal sealed unsafe class BatchedUdpWorker : LoadCounters, IDisposable
{
    /// <summary>Datagrams taken per recvmmsg call.</summary>
    private const int ReceiveBatch = 64;

    /// <summary>
    /// Larger than any Binding response a server sends to a bare request; a longer datagram is
    /// truncated by the kernel (MSG_TRUNC) and counted as invalid.
    /// </summary>
    private const int ReceiveBufferSize = 1024;

    private const int NameStride = 32;
    private const int RequestStride = 32;
    private const int MaxEvents = 64;

    /// <summary>Datagrams per GSO send; the kernel's limit (UDP_MAX_SEGMENTS) is 64 or more.</summary>
    private const int EpollWaitMs = 5;

    private readonly RunState _run;
    private readonly Socket[] _sockets;
    private readonly int[] _fds;
    private readonly int _window;
    private readonly int _requestLength;
    private readonly bool _fingerprint;
    private readonly long _timeoutTicks;
    private readonly long _sweepTicks;

    // [socket * window + slot]
    private readonly long[] _sentAt;
    private readonly int[] _pendingSlots;
    private readonly int[] _pendingCount;

    private readonly byte* _memory;
    private readonly byte* _target;
    private readonly AddressFamily _family;
    private readonly byte* _requests;
    private readonly IoVec* _requestIov;
    private readonly IoVec* _gatherIov;
    private readonly bool _gso;
    private readonly MMsgHdr* _sendMessages;
    private readonly byte* _receiveBuffers;
    private readonly byte* _receiveNames;
    private readonly MMsgHdr* _receiveMessages;
    private readonly byte* _events;
    private readonly int _epoll;

    private Thread? _thread;
    private volatile bool _stop;
    private bool _disposed;
    private ulong _rng;

    public BatchedUdpWorker(RunState run, IPEndPoint target, int sockets, int window, bool fingerprint,
        bool connected, bool gso, int timeoutMs, int index)
    {
        _gso = gso;
        _run = run;
        _window = window;
        _fingerprint = fingerprint;
        _requestLength = StunWire.RequestLength(fingerprint);
        _timeoutTicks = timeoutMs * Stopwatch.Frequency / 1000;
        _sweepTicks = Math.Max(5, timeoutMs / 4) * Stopwatch.Frequency / 1000;
        _family = target.AddressFamily;
        _rng = (ulong)Random.Shared.NextInt64() ^ ((ulong)index << 48) ^ 0x9E37_79B9_7F4A_7C15UL;
        _sentAt = new long[sockets * window];
        _pendingSlots = new int[sockets * window];
        _pendingCount = new int[sockets];

        var slots = (nuint)(sockets * window);
        nuint offset = 0;
        nuint Take(nuint bytes)
        {
            var at = offset;
            offset += (bytes + 63) & ~(nuint)63;
            return at;
        }

        var targetAt = Take(LinuxEpoll.SockaddrIn6Length);
        var requestsAt = Take(slots * RequestStride);
        var requestIovAt = Take(slots * (nuint)sizeof(IoVec));
        var gatherIovAt = Take(slots * (nuint)sizeof(IoVec));
        var sendAt = Take(slots * (nuint)sizeof(MMsgHdr));
        var receiveBuffersAt = Take(ReceiveBatch * ReceiveBufferSize);
        var receiveNamesAt = Take(ReceiveBatch * NameStride);
        var receiveIovAt = Take(ReceiveBatch * (nuint)sizeof(IoVec));
        var receiveAt = Take(ReceiveBatch * (nuint)sizeof(MMsgHdr));
        var eventsAt = Take((nuint)(MaxEvents * LinuxEpoll.EventSize));
        _memory = (byte*)NativeMemory.AlignedAlloc(offset, 64);
        NativeMemory.Clear(_memory, offset);
        _target = _memory + targetAt;
        _requests = _memory + requestsAt;
        _requestIov = (IoVec*)(_memory + requestIovAt);
        _gatherIov = (IoVec*)(_memory + gatherIovAt);
        _sendMessages = (MMsgHdr*)(_memory + sendAt);
        _receiveBuffers = _memory + receiveBuffersAt;
        _receiveNames = _memory + receiveNamesAt;
        var receiveIov = (IoVec*)(_memory + receiveIovAt);
        _receiveMessages = (MMsgHdr*)(_memory + receiveAt);
        _events = _memory + eventsAt;

        var targetLength = WriteSockAddr(target, _target);
        for (nuint i = 0; i < slots; i++)
        {
            _requestIov[i].Base = _requests + (i * RequestStride);
            _requestIov[i].Length = (nuint)_requestLength;
            // Without GSO, message k of a socket sends the k-th queued request; with GSO, Flush
            // points each message at a run of queued requests instead.
            ref var header = ref _sendMessages[i].Header;
            header.Iov = &_gatherIov[i];
            header.IovLength = 1;
            if (!connected)
            {
                header.Name = _target;
                header.NameLength = (uint)targetLength;
            }
        }

        for (var i = 0; i < ReceiveBatch; i++)
        {
            receiveIov[i].Base = _receiveBuffers + (i * ReceiveBufferSize);
            receiveIov[i].Length = ReceiveBufferSize;
            ref var header = ref _receiveMessages[i].Header;
            header.Iov = &receiveIov[i];
            header.IovLength = 1;
            header.Name = _receiveNames + (i * NameStride);
            header.NameLength = LinuxEpoll.SockaddrIn6Length;
        }

        _sockets = new Socket[sockets];
        _fds = new int[sockets];
        _epoll = LinuxEpoll.Create(LinuxEpoll.EpollCloexec);
        if (_epoll < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            NativeMemory.AlignedFree(_memory);
            throw new SocketException(errno);
        }

        var registration = stackalloc byte[16];
        Span<byte> gsoSize = stackalloc byte[sizeof(int)];
        BinaryPrimitives.WriteInt32LittleEndian(gsoSize, _requestLength);
        try
        {
            for (var s = 0; s < sockets; s++)
            {
                var socket = new Socket(_family, SocketType.Dgram, ProtocolType.Udp);
                _sockets[s] = socket;
                socket.Bind(new IPEndPoint(_family == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
                if (connected)
                {
                    socket.Connect(target);
                }

                if (_gso)
                {
                    // UDP_SEGMENT: one send of n equal-sized requests leaves as one GSO packet that
                    // the kernel splits into n ordinary datagrams before the server's socket sees
                    // them (loopback hands it over whole, and the receiving UDP socket, unless it
                    // asked for UDP_GRO, gets it segmented). It saves the generator the per-datagram
                    // route/IP/loopback work; the server's side is unchanged.
                    try
                    {
                        socket.SetRawSocketOption(SolUdp, UdpSegment, gsoSize);
                    }
                    catch (SocketException)
                    {
                        // Kernel without UDP GSO (before 4.18): one datagram per message instead.
                        _gso = false;
                    }
                }

                _fds[s] = (int)socket.Handle;
                LinuxEpoll.WriteEvent(registration, LinuxEpoll.EpollIn, (ulong)s);
                if (LinuxEpoll.Control(_epoll, LinuxEpoll.EpollCtlAdd, _fds[s], registration) != 0)
                {
                    throw new SocketException(Marshal.GetLastPInvokeError());
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>False when UDP GSO was asked for but the kernel refused it.</summary>
    public bool UsesGso => _gso;

    /// <summary>Sends the first window on every socket and starts the I/O thread.</summary>
    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "udp-batched" };
        _thread.Start();
    }

    /// <summary>Stops the I/O thread (it notices within a few ms), then frees sockets and memory.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _stop = true;
        _thread?.Join();
        foreach (var socket in _sockets)
        {
            socket?.Dispose();
        }

        if (_epoll >= 0)
        {
            _ = LinuxEpoll.Close(_epoll);
        }

        NativeMemory.AlignedFree(_memory);
    }

    private void Run()
    {
        for (var s = 0; s < _sockets.Length; s++)
        {
            for (var slot = 0; slot < _window; slot++)
            {
                Queue(s, slot);
            }

            Flush(s);
        }

        var nextSweep = Stopwatch.GetTimestamp() + _sweepTicks;
        while (!_stop && _run.Phase != RunPhase.Drain)
        {
            var ready = LinuxEpoll.Wait(_epoll, _events, MaxEvents, EpollWaitMs);
            if (ready < 0)
            {
                if (Marshal.GetLastPInvokeError() != EIntr)
                {
                    Errors++;
                }

                ready = 0;
            }

            for (var i = 0; i < ready; i++)
            {
                Receive((int)LinuxEpoll.ReadEventData(_events + (i * LinuxEpoll.EventSize)));
            }

            var now = Stopwatch.GetTimestamp();
            if (now >= nextSweep)
            {
                Sweep(now - _timeoutTicks);
                nextSweep = now + _sweepTicks;
            }
        }
    }

    private void Receive(int s)
    {
        var received = LinuxUdp.RecvMmsg(_fds[s], _receiveMessages, ReceiveBatch, LinuxEpoll.MsgDontWait, null);
        if (received < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is not (EAgain or EIntr))
            {
                // ECONNREFUSED (an ICMP port unreachable on a connected socket) and the like: the
                // affected transactions time out and are replaced, as in the portable mode.
                Errors++;
            }

            return;
        }

        var now = Stopwatch.GetTimestamp();
        for (var i = 0; i < received; i++)
        {
            ref var message = ref _receiveMessages[i];
            if ((message.Header.Flags & MsgTrunc) != 0 || !IsFromTarget(_receiveNames + (i * NameStride), message.Header.NameLength))
            {
                Invalid++;
            }
            else
            {
                HandleResponse(s, new ReadOnlySpan<byte>(_receiveBuffers + (i * ReceiveBufferSize), (int)message.Length), now);
            }

            // recvmmsg writes the actual address length back; restore the capacity for next time.
            message.Header.NameLength = LinuxEpoll.SockaddrIn6Length;
        }

        Flush(s);
    }

    private void HandleResponse(int s, ReadOnlySpan<byte> message, long now)
    {
        if (!StunWire.IsBindingSuccess(message))
        {
            Invalid++;
            return;
        }

        var transactionId = message.Slice(StunWire.TransactionIdOffset, StunWire.TransactionIdLength);
        var slot = BinaryPrimitives.ReadUInt16BigEndian(transactionId[(StunWire.TransactionIdLength - 2)..]);
        var index = (s * _window) + slot;
        if (slot >= _window || _sentAt[index] == 0 || !transactionId.SequenceEqual(RequestTransactionId(index)))
        {
            // A late answer to a transaction already declared lost and replaced, or a duplicate.
            Stale++;
            return;
        }

        var phase = _run.Phase;
        if (phase == RunPhase.Measure)
        {
            Ok++;
            Histogram.Record((now - _sentAt[index]) * 1_000_000 / Stopwatch.Frequency);
        }

        _sentAt[index] = 0;
        if (phase != RunPhase.Drain)
        {
            Queue(s, slot);
        }
    }

    /// <summary>Replaces every transaction older than the timeout so loss cannot stall the window.</summary>
    private void Sweep(long deadline)
    {
        var phase = _run.Phase;
        for (var s = 0; s < _sockets.Length; s++)
        {
            for (var slot = 0; slot < _window; slot++)
            {
                var index = (s * _window) + slot;
                var sentAt = _sentAt[index];
                if (sentAt == 0 || sentAt > deadline)
                {
                    continue;
                }

                _sentAt[index] = 0;
                if (phase == RunPhase.Measure)
                {
                    Lost++;
                }

                if (phase != RunPhase.Drain)
                {
                    Queue(s, slot);
                }
            }

            Flush(s);
        }
    }

    /// <summary>
    /// Writes a fresh request into the slot's fixed buffer and queues it for the socket's next
    /// sendmmsg. The slot stays "not outstanding" (sent-at 0) until <see cref="Flush"/> stamps it.
    /// </summary>
    private void Queue(int s, int slot)
    {
        var index = (s * _window) + slot;
        // Ten random bytes, then the slot index, so a response finds its slot in O(1); the full id
        // is still compared.
        Span<byte> id = stackalloc byte[StunWire.TransactionIdLength];
        BinaryPrimitives.WriteUInt64LittleEndian(id, NextRandom());
        BinaryPrimitives.WriteUInt16LittleEndian(id[8..], (ushort)NextRandom());
        BinaryPrimitives.WriteUInt16BigEndian(id[10..], (ushort)slot);
        StunWire.WriteBindingRequest(new Span<byte>(_requests + (index * RequestStride), _requestLength), id, _fingerprint);

        var basis = s * _window;
        var pending = _pendingCount[s]++;
        _pendingSlots[basis + pending] = slot;
        _gatherIov[basis + pending] = _requestIov[index];
        if (_run.Phase == RunPhase.Measure)
        {
            Sent++;
        }
    }

    /// <summary>Sends everything queued on socket <paramref name="s"/> with as few sendmmsg calls as the kernel allows.</summary>
    private void Flush(int s)
    {
        var count = _pendingCount[s];
        if (count == 0)
        {
            return;
        }

        _pendingCount[s] = 0;
        var basis = s * _window;
        var stamp = Stopwatch.GetTimestamp();
        for (var k = 0; k < count; k++)
        {
            _sentAt[basis + _pendingSlots[basis + k]] = stamp;
        }

        // A refused message's requests stay outstanding, time out and are replaced, as in the portable mode.
        Errors += SendGathered(_fds[s], _sendMessages + basis, _gatherIov + basis, count, _gso);
    }

    private Span<byte> RequestTransactionId(int index) =>
        new(_requests + (index * RequestStride) + StunWire.TransactionIdOffset, StunWire.TransactionIdLength);

    /// <summary>Family, port and address equal to the target's (flow info and scope are ignored).</summary>
    private bool IsFromTarget(byte* name, uint length)
    {
        if (_family == AddressFamily.InterNetworkV6)
        {
            return length >= LinuxEpoll.SockaddrIn6Length
                && new ReadOnlySpan<byte>(name, 4).SequenceEqual(new ReadOnlySpan<byte>(_target, 4))
                && new ReadOnlySpan<byte>(name + 8, 16).SequenceEqual(new ReadOnlySpan<byte>(_target + 8, 16));
        }

        return length >= 16 && *(ulong*)name == *(ulong*)_target;
    }


    private ulong NextRandom() => LinuxNative.NextRandom(ref _rng);
}
