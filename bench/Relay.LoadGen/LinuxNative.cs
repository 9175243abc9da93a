using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Relay.LoadGen;

/// <summary>
/// The few Linux syscalls the batched UDP mode needs, with the LP64 (x86_64/aarch64 glibc) layouts
/// of their structs. <see cref="IsSupported"/> checks the layouts once so a wrong platform fails
/// loudly instead of corrupting memory.
/// </summary>
internal static unsafe partial class LinuxNative
{
    public const int MsgDontWait = 0x40;
    public const int MsgTrunc = 0x20;
    public const int EpollIn = 0x001;
    public const int SolUdp = 17;
    public const int UdpSegment = 103;
    public const int EpollCtlAdd = 1;
    public const int EpollCloExec = 0x80000;
    public const int ScClkTck = 2;

    public const int EIntr = 4;
    public const int EAgain = 11;
    public const int EConnRefused = 111;

    /// <summary>sizeof(struct sockaddr_in6); also enough for a sockaddr_in.</summary>
    public const int SockAddrSize = 28;

    /// <summary>Datagrams one UDP GSO send may carry here; the kernel's limit is 64 segments.</summary>
    public const int GsoMaxSegments = 64;

    private const string Libc = "libc";

    /// <summary>
    /// Sends <paramref name="count"/> datagrams described by <paramref name="gather"/> with as few
    /// sendmmsg calls as the kernel allows: one message per datagram, or with <paramref name="gso"/>
    /// up to <see cref="GsoMaxSegments"/> datagrams per message (the socket's UDP_SEGMENT splits them).
    /// A message the kernel refuses is skipped; returns how many datagrams were in refused messages.
    /// </summary>
    public static int SendGathered(int fd, MMsgHdr* messages, IoVec* gather, int count, bool gso)
    {
        var messageCount = count;
        var perMessage = 1;
        if (gso)
        {
            perMessage = GsoMaxSegments;
            messageCount = (count + GsoMaxSegments - 1) / GsoMaxSegments;
            for (var m = 0; m < messageCount; m++)
            {
                messages[m].Header.Iov = &gather[m * GsoMaxSegments];
                messages[m].Header.IovLength = (nuint)Math.Min(GsoMaxSegments, count - (m * GsoMaxSegments));
            }
        }

        var failed = 0;
        var done = 0;
        while (done < messageCount)
        {
            var sent = SendMMsg(fd, messages + done, (uint)(messageCount - done), 0);
            if (sent > 0)
            {
                done += sent;
                continue;
            }

            if (sent < 0 && Marshal.GetLastPInvokeError() == EIntr)
            {
                continue;
            }

            // This message failed (a pending ICMP error, a full buffer): its datagrams are the caller's to count.
            failed += Math.Min(perMessage, count - (done * perMessage));
            done++;
        }

        return failed;
    }

    /// <summary>Writes <paramref name="endpoint"/> as a native sockaddr_in/sockaddr_in6; returns its length.</summary>
    public static int WriteSockAddr(IPEndPoint endpoint, byte* at)
    {
        var dest = new Span<byte>(at, SockAddrSize);
        if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(dest, 10); // AF_INET6, host order
            BinaryPrimitives.WriteUInt16BigEndian(dest[2..], (ushort)endpoint.Port);
            _ = endpoint.Address.TryWriteBytes(dest.Slice(8, 16), out _);
            BinaryPrimitives.WriteUInt32LittleEndian(dest[24..], (uint)endpoint.Address.ScopeId);
            return SockAddrSize;
        }

        BinaryPrimitives.WriteUInt16LittleEndian(dest, 2); // AF_INET, host order
        BinaryPrimitives.WriteUInt16BigEndian(dest[2..], (ushort)endpoint.Port);
        _ = endpoint.Address.TryWriteBytes(dest.Slice(4, 4), out _);
        return 16;
    }

    /// <summary>SplitMix64: transaction ids and tags only need to be unpredictable enough not to collide.</summary>
    public static ulong NextRandom(ref ulong state)
    {
        var z = state += 0x9E37_79B9_7F4A_7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Linux on a 64-bit CPU whose struct layouts match the declarations below.</summary>
    public static bool IsSupported =>
        OperatingSystem.IsLinux()
        && IntPtr.Size == 8
        && sizeof(IoVec) == 16
        && sizeof(MsgHdr) == 56
        && sizeof(MMsgHdr) == 64
        && Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Iov)) == 16
        && Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Flags)) == 48
        && Marshal.OffsetOf<MMsgHdr>(nameof(MMsgHdr.Length)) == 56
        && RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;

    /// <summary>
    /// struct epoll_event is packed on x86_64 (12 bytes, data at offset 4) and naturally aligned
    /// elsewhere (16 bytes, data at offset 8).
    /// </summary>
    public static int EpollEventSize => RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    private static int EpollDataOffset => RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    public static void WriteEpollEvent(byte* at, uint events, ulong data)
    {
        Unsafe.WriteUnaligned(at, events);
        Unsafe.WriteUnaligned(at + EpollDataOffset, data);
    }

    public static ulong ReadEpollData(byte* at) => Unsafe.ReadUnaligned<ulong>(at + EpollDataOffset);

    [LibraryImport(Libc, EntryPoint = "sendmmsg", SetLastError = true)]
    public static partial int SendMMsg(int fd, MMsgHdr* messages, uint count, int flags);

    [LibraryImport(Libc, EntryPoint = "recvmmsg", SetLastError = true)]
    public static partial int RecvMMsg(int fd, MMsgHdr* messages, uint count, int flags, void* timeout);

    [LibraryImport(Libc, EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int EpollCreate1(int flags);

    [LibraryImport(Libc, EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int EpollCtl(int epfd, int op, int fd, byte* @event);

    [LibraryImport(Libc, EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int EpollWait(int epfd, byte* events, int maxEvents, int timeoutMs);

    [LibraryImport(Libc, EntryPoint = "sendto", SetLastError = true)]
    public static partial nint SendTo(int fd, void* buffer, nuint length, int flags, void* address, uint addressLength);

    [LibraryImport(Libc, EntryPoint = "sysconf")]
    public static partial long SysConf(int name);

    /// <summary>epoll_wait with a nanosecond timeout (Linux 5.11, glibc 2.35); the timespec is {tv_sec, tv_nsec}.</summary>
    [LibraryImport(Libc, EntryPoint = "epoll_pwait2", SetLastError = true)]
    public static partial int EpollPWait2(int epfd, byte* events, int maxEvents, long* timeout, void* sigmask);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MMsgHdr
    {
        public MsgHdr Header;
        public uint Length;
    }
}
