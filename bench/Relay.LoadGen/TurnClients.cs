using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Relay.Server.Transport.Linux;
using static Relay.LoadGen.LinuxNative;
using static Relay.Server.Transport.Linux.LinuxUdp;

namespace Relay.LoadGen;

/// <summary>
/// The TURN mode's clients: one UDP socket per allocation (each its own 5-tuple, as distinct TURN
/// clients would be), all driven by the calling thread through one epoll instance. Setup (the 401
/// dance, Allocate, CreatePermission, ChannelBind, Refresh) is in TurnClients.Setup.cs; relayed
/// traffic (closed-loop round trips and open-loop latency) in TurnClients.Traffic.cs. Receive
/// buffers, message headers and epoll events are native memory allocated once.
/// </summary>
internal sealed unsafe partial class TurnClients : IDisposable
{
    private const int ReceiveBatch = 64;
    private const int ReceiveBufferSize = 2048;
    private const int NameStride = 32;
    private const int MaxEvents = 256;
    private const int ControlSize = 64;
    private const int SolSocket = 1;

    /// <summary>SO_TIMESTAMPNS (= SCM_TIMESTAMPNS): the kernel stamps each datagram as it is queued to the socket.</summary>
    private const int SoTimestampNs = 35;

    private readonly Socket[] _sockets;
    private readonly int[] _fds;
    private readonly int _epoll;
    private readonly AddressFamily _family;
    private readonly byte* _memory;
    private readonly byte* _targetName;
    private readonly int _targetNameLength;
    private readonly byte* _peerNames;
    private readonly int _peerNameLength;
    private readonly IPEndPoint[] _peers;
    private readonly MMsgHdr* _rx;
    private readonly byte* _rxBuffers;
    private readonly byte* _rxNames;
    private readonly byte* _rxControl;
    private readonly byte* _events;
    private bool _disposed;
    private bool _pwait2 = true;
    private ulong _rng;

    /// <param name="target">The TURN server.</param>
    /// <param name="peers">Echo peers; allocation i uses peer i % count.</param>
    /// <param name="count">Client sockets (allocations).</param>
    /// <param name="portBase">First local port to try (0: let the kernel pick ephemeral ports).</param>
    /// <param name="credentials">Long-term credentials for every allocation.</param>
    public TurnClients(IPEndPoint target, IPEndPoint[] peers, int count, int portBase, TurnCredentials credentials)
    {
        _family = target.AddressFamily;
        _peers = peers;
        _credentials = credentials;
        _rng = (ulong)Random.Shared.NextInt64() | 1;
        _sockets = new Socket[count];
        _fds = new int[count];
        _setupState = new byte[count];
        _tries = new byte[count];
        _deadline = new long[count];
        _transactionIds = new byte[count * StunWire.TransactionIdLength];
        _nonces = new byte[]?[count];

        var size = (nuint)(NameStride * (1 + peers.Length)) + (nuint)(ReceiveBatch * (sizeof(MMsgHdr) + sizeof(IoVec) + ReceiveBufferSize + NameStride))
            + (nuint)(MaxEvents * LinuxEpoll.EventSize) + (nuint)(ReceiveBatch * ControlSize) + 64;
        _memory = (byte*)NativeMemory.AlignedAlloc(size, 64);
        NativeMemory.Clear(_memory, size);
        _targetName = _memory;
        _peerNames = _memory + NameStride;
        _rx = (MMsgHdr*)(_peerNames + (NameStride * peers.Length));
        var rxIov = (IoVec*)(_rx + ReceiveBatch);
        _rxBuffers = (byte*)(rxIov + ReceiveBatch);
        _rxNames = _rxBuffers + (ReceiveBatch * ReceiveBufferSize);
        _rxControl = _rxNames + (ReceiveBatch * NameStride);
        _events = _rxControl + (ReceiveBatch * ControlSize);
        _targetNameLength = WriteSockAddr(target, _targetName);
        for (var p = 0; p < peers.Length; p++)
        {
            _peerNameLength = WriteSockAddr(peers[p], _peerNames + (p * NameStride));
        }

        for (var i = 0; i < ReceiveBatch; i++)
        {
            rxIov[i].Base = _rxBuffers + (i * ReceiveBufferSize);
            rxIov[i].Length = ReceiveBufferSize;
            _rx[i].Header.Iov = &rxIov[i];
            _rx[i].Header.IovLength = 1;
            _rx[i].Header.Name = _rxNames + (i * NameStride);
            _rx[i].Header.Control = _rxControl + (i * ControlSize);
        }

        _epoll = LinuxEpoll.Create(LinuxEpoll.EpollCloexec);
        if (_epoll < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            NativeMemory.AlignedFree(_memory);
            throw new SocketException(errno);
        }

        var any = _family == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any;
        var registration = stackalloc byte[16];
        var port = portBase;
        try
        {
            for (var i = 0; i < count; i++)
            {
                var socket = new Socket(_family, SocketType.Dgram, ProtocolType.Udp);
                _sockets[i] = socket;
                port = BindFrom(socket, any, port);
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

    public int Count => _sockets.Length;

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var socket in _sockets)
        {
            socket?.Dispose();
        }

        if (_epoll >= 0)
        {
            _ = LinuxEpoll.Close(_epoll);
        }

        FreeTraffic();
        NativeMemory.AlignedFree(_memory);
    }

    /// <summary>
    /// Binds to the first free port at or above <paramref name="port"/> (below the usual relay range,
    /// 49152+, so thousands of clients do not take the ports the server relays on); returns the next
    /// port to try. Port 0 lets the kernel choose.
    /// </summary>
    private static int BindFrom(Socket socket, IPAddress any, int port)
    {
        if (port == 0)
        {
            socket.Bind(new IPEndPoint(any, 0));
            return 0;
        }

        for (; port < 49152; port++)
        {
            try
            {
                socket.Bind(new IPEndPoint(any, port));
                return port + 1;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                // Someone else's: try the next.
            }
        }

        throw new SocketException((int)SocketError.AddressAlreadyInUse);
    }

    /// <summary>Reads up to one batch from socket <paramref name="s"/>; datagram k is at <see cref="Received"/>.</summary>
    private int ReceiveBatchFrom(int s)
    {
        for (var i = 0; i < ReceiveBatch; i++)
        {
            _rx[i].Header.NameLength = LinuxEpoll.SockaddrIn6Length;
            _rx[i].Header.ControlLength = ControlSize;
            _rx[i].Header.Flags = 0;
        }

        var received = LinuxUdp.RecvMmsg(_fds[s], _rx, ReceiveBatch, LinuxEpoll.MsgDontWait, null);
        return received < 0 ? 0 : received;
    }

    /// <summary>
    /// The kernel's receive timestamp of datagram <paramref name="k"/> (CLOCK_REALTIME, ns since the
    /// Unix epoch) when SO_TIMESTAMPNS is on; 0 otherwise.
    /// </summary>
    private long ReceivedAtNs(int k)
    {
        var control = _rxControl + (k * ControlSize);
        var length = (int)_rx[k].Header.ControlLength;
        var offset = 0;
        // struct cmsghdr on LP64: size_t cmsg_len, int cmsg_level, int cmsg_type, data at 16.
        while (offset + 16 <= length)
        {
            var cmsgLength = (int)*(nuint*)(control + offset);
            if (cmsgLength < 16)
            {
                break;
            }

            if (*(int*)(control + offset + 8) == SolSocket && *(int*)(control + offset + 12) == SoTimestampNs && cmsgLength >= 32)
            {
                return (*(long*)(control + offset + 16) * 1_000_000_000L) + *(long*)(control + offset + 24);
            }

            offset += (cmsgLength + 7) & ~7;
        }

        return 0;
    }

    /// <summary>Turns kernel receive timestamps on or off for the first <paramref name="count"/> sockets.</summary>
    private void SetReceiveTimestamps(int count, bool on)
    {
        Span<byte> value = [on ? (byte)1 : (byte)0, 0, 0, 0];
        for (var s = 0; s < count; s++)
        {
            _sockets[s].SetRawSocketOption(SolSocket, SoTimestampNs, value);
        }
    }

    /// <summary>CLOCK_REALTIME in ns since the Unix epoch, the clock SO_TIMESTAMPNS uses.</summary>
    private static long RealtimeNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    private ReadOnlySpan<byte> Received(int k) =>
        (_rx[k].Header.Flags & MsgTrunc) != 0 ? default : new(_rxBuffers + (k * ReceiveBufferSize), (int)_rx[k].Length);

    /// <summary>Family, port and address equal to the server's (flow info and scope are ignored).</summary>
    private bool FromTarget(int k)
    {
        var name = _rxNames + (k * NameStride);
        var length = _rx[k].Header.NameLength;
        if (_family == AddressFamily.InterNetworkV6)
        {
            return length >= LinuxEpoll.SockaddrIn6Length
                && new ReadOnlySpan<byte>(name, 4).SequenceEqual(new ReadOnlySpan<byte>(_targetName, 4))
                && new ReadOnlySpan<byte>(name + 8, 16).SequenceEqual(new ReadOnlySpan<byte>(_targetName + 8, 16));
        }

        return length >= 16 && *(ulong*)name == *(ulong*)_targetName;
    }

    private int Wait(int timeoutMs)
    {
        var ready = LinuxEpoll.Wait(_epoll, _events, MaxEvents, timeoutMs);
        return ready < 0 ? 0 : ready;
    }

    /// <summary>
    /// Like <see cref="Wait"/> with a timeout in nanoseconds, so an open loop can sleep until exactly
    /// the next send is due; falls back to whole milliseconds where epoll_pwait2 is missing.
    /// </summary>
    private int WaitNs(long timeoutNs)
    {
        if (_pwait2)
        {
            var timeout = stackalloc long[2];
            timeout[0] = timeoutNs / 1_000_000_000;
            timeout[1] = timeoutNs % 1_000_000_000;
            try
            {
                var ready = EpollPWait2(_epoll, _events, MaxEvents, timeout, null);
                return ready < 0 ? 0 : ready;
            }
            catch (EntryPointNotFoundException)
            {
                _pwait2 = false;
            }
        }

        return Wait((int)Math.Min(1, (timeoutNs + 999_999) / 1_000_000));
    }

    private int ReadyIndex(int e) => (int)LinuxEpoll.ReadEventData(_events + (e * LinuxEpoll.EventSize));


    private ulong NextRandom() => LinuxNative.NextRandom(ref _rng);
}

/// <summary>Long-term credentials (RFC 8489 §9.2); the key is derived once the server names its realm.</summary>
internal sealed class TurnCredentials
{
    public TurnCredentials(string user, string password)
    {
        User = user;
        Password = password;
        UserUtf8 = System.Text.Encoding.UTF8.GetBytes(user);
    }

    public string User { get; }

    public string Password { get; }

    public byte[] UserUtf8 { get; }

    public byte[] RealmUtf8 { get; private set; } = [];

    public byte[] Key { get; private set; } = [];

    public void SetRealm(ReadOnlySpan<byte> realm)
    {
        if (realm.SequenceEqual(RealmUtf8))
        {
            return;
        }

        RealmUtf8 = realm.ToArray();
        Key = TurnWire.LongTermKey(User, System.Text.Encoding.UTF8.GetString(realm), Password);
    }
}
