using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Relay.Server.Transport.Linux;
using static Relay.Server.Transport.Linux.LinuxUdp;

namespace Relay.LoadGen;

/// <summary>
/// What the batched UDP mode needs beyond the server's recvmmsg/sendmmsg/epoll declarations
/// (<see cref="LinuxUdp"/>, <see cref="LinuxEpoll"/>, compiled into this project from src/Relay/Transport/Linux):
/// UDP GSO, epoll_pwait2 and sysconf. <see cref="IsSupported"/> checks the struct layouts once so a wrong
/// platform fails loudly instead of corrupting memory.
/// </summary>
internal static unsafe partial class LinuxNative
{
    public const int SolUdp = 17;
    public const int UdpSegment = 103;
    public const int ScClkTck = 2;

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
            var sent = SendMmsg(fd, messages + done, (uint)(messageCount - done), 0);
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
        var dest = new Span<byte>(at, LinuxEpoll.SockaddrIn6Length);
        if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(dest, LinuxEpoll.AfInet6);
            BinaryPrimitives.WriteUInt16BigEndian(dest[2..], (ushort)endpoint.Port);
            _ = endpoint.Address.TryWriteBytes(dest.Slice(8, 16), out _);
            BinaryPrimitives.WriteUInt32LittleEndian(dest[24..], (uint)endpoint.Address.ScopeId);
            return LinuxEpoll.SockaddrIn6Length;
        }

        BinaryPrimitives.WriteUInt16LittleEndian(dest, LinuxEpoll.AfInet);
        BinaryPrimitives.WriteUInt16BigEndian(dest[2..], (ushort)endpoint.Port);
        _ = endpoint.Address.TryWriteBytes(dest.Slice(4, 4), out _);
        return LinuxEpoll.SockaddrInLength;
    }

    /// <summary>SplitMix64: transaction ids and tags only need to be unpredictable enough not to collide.</summary>
    public static ulong NextRandom(ref ulong state)
    {
        var z = state += 0x9E37_79B9_7F4A_7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Linux on a 64-bit CPU whose struct layouts match the declarations of <see cref="LinuxUdp"/>.</summary>
    public static bool IsSupported =>
        LinuxUdp.IsSupported
        && IntPtr.Size == 8
        && sizeof(IoVec) == 16
        && sizeof(MsgHdr) == 56
        && sizeof(MMsgHdr) == 64
        && Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Iov)) == 16
        && Marshal.OffsetOf<MsgHdr>(nameof(MsgHdr.Flags)) == 48
        && Marshal.OffsetOf<MMsgHdr>(nameof(MMsgHdr.Length)) == 56;

    [LibraryImport(Libc, EntryPoint = "sysconf")]
    public static partial long SysConf(int name);

    /// <summary>epoll_wait with a nanosecond timeout (Linux 5.11, glibc 2.35); the timespec is {tv_sec, tv_nsec}.</summary>
    [LibraryImport(Libc, EntryPoint = "epoll_pwait2", SetLastError = true)]
    public static partial int EpollPWait2(int epfd, byte* events, int maxEvents, long* timeout, void* sigmask);
}
