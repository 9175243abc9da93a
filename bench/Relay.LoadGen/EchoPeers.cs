using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Relay.Server.Transport.Linux;
using static Relay.Server.Transport.Linux.LinuxUdp;

namespace Relay.LoadGen;

/// <summary>
/// The TURN mode's peers: UDP sockets on the loopback address that send every datagram straight
/// back to its source (for relayed traffic, the server's relayed transport address). One dedicated
/// thread drives them all through epoll, taking each ready socket's queue with one
/// <c>recvmmsg(2)</c> and answering the whole batch with one <c>sendmmsg(2)</c> (the source
/// addresses recvmmsg filled in become the destinations). Nothing is allocated per packet.
/// </summary>
internal sealed unsafe class EchoPeers : IDisposable
{
    private const int Batch = 64;
    private const int BufferSize = 2048;
    private const int NameStride = 32;
    private const int MaxEvents = 16;
    private const int SocketBufferBytes = 4 * 1024 * 1024;

    private readonly Socket[] _sockets;
    private readonly int[] _fds;
    private readonly int _epoll;
    private readonly byte* _memory;
    private readonly MMsgHdr* _messages;
    private readonly IoVec* _iov;
    private readonly byte* _buffers;
    private readonly byte* _names;
    private readonly byte* _events;
    private Thread? _thread;
    private volatile bool _stop;
    private bool _disposed;

    /// <summary>Datagrams echoed (written by the peer thread only).</summary>
    public long Echoed;

    /// <summary>Datagrams the kernel refused to send back (full buffer etc.).</summary>
    public long SendErrors;

    public EchoPeers(IPAddress address, int count)
    {
        Endpoints = new IPEndPoint[count];
        _sockets = new Socket[count];
        _fds = new int[count];
        var size = (nuint)(Batch * (sizeof(MMsgHdr) + sizeof(IoVec) + BufferSize + NameStride)) + (nuint)(MaxEvents * LinuxEpoll.EventSize);
        _memory = (byte*)NativeMemory.AlignedAlloc(size, 64);
        NativeMemory.Clear(_memory, size);
        _messages = (MMsgHdr*)_memory;
        _iov = (IoVec*)(_messages + Batch);
        _buffers = (byte*)(_iov + Batch);
        _names = _buffers + (Batch * BufferSize);
        _events = _names + (Batch * NameStride);
        for (var i = 0; i < Batch; i++)
        {
            _iov[i].Base = _buffers + (i * BufferSize);
            _messages[i].Header.Iov = &_iov[i];
            _messages[i].Header.IovLength = 1;
            _messages[i].Header.Name = _names + (i * NameStride);
        }

        _epoll = LinuxEpoll.Create(LinuxEpoll.EpollCloexec);
        if (_epoll < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            NativeMemory.AlignedFree(_memory);
            throw new SocketException(errno);
        }

        var registration = stackalloc byte[16];
        try
        {
            for (var i = 0; i < count; i++)
            {
                var socket = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
                _sockets[i] = socket;
                // Many relays' worth of traffic converges here: room for bursts, so loss is the server's.
                socket.ReceiveBufferSize = SocketBufferBytes;
                socket.SendBufferSize = SocketBufferBytes;
                socket.Bind(new IPEndPoint(address, 0));
                Endpoints[i] = (IPEndPoint)socket.LocalEndPoint!;
                _fds[i] = (int)socket.Handle;
                LinuxEpoll.WriteEvent(registration, LinuxEpoll.EpollIn, (ulong)i);
                if (LinuxEpoll.Control(_epoll, LinuxEpoll.EpollCtlAdd, _fds[i], registration) != 0)
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

    public IPEndPoint[] Endpoints { get; }

    public void Start()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "turn-echo-peers" };
        _thread.Start();
    }

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
        while (!_stop)
        {
            var ready = LinuxEpoll.Wait(_epoll, _events, MaxEvents, 5);
            for (var e = 0; e < ready; e++)
            {
                Echo(_fds[(int)LinuxEpoll.ReadEventData(_events + (e * LinuxEpoll.EventSize))]);
            }
        }
    }

    private void Echo(int fd)
    {
        // Level-triggered: a socket with more than one batch queued is reported again next time.
        for (var i = 0; i < Batch; i++)
        {
            _iov[i].Length = BufferSize;
            _messages[i].Header.NameLength = LinuxEpoll.SockaddrIn6Length;
            _messages[i].Header.Flags = 0;
        }

        var received = LinuxUdp.RecvMmsg(fd, _messages, Batch, LinuxEpoll.MsgDontWait, null);
        if (received <= 0)
        {
            return;
        }

        for (var i = 0; i < received; i++)
        {
            // Send back exactly what arrived, to where it came from.
            _iov[i].Length = _messages[i].Length;
        }

        var done = 0;
        while (done < received)
        {
            var sent = LinuxUdp.SendMmsg(fd, _messages + done, (uint)(received - done), 0);
            if (sent > 0)
            {
                done += sent;
                continue;
            }

            if (sent < 0 && Marshal.GetLastPInvokeError() == EIntr)
            {
                continue;
            }

            SendErrors++;
            done++;
        }

        Echoed += received;
    }
}
