using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Relay.Server.Transport.Linux;

/// <summary>
/// epoll(7) and sendto(2). One epoll instance watches thousands of relay sockets from a single thread,
/// so an idle allocation costs a descriptor and a few hundred bytes instead of a pending async receive
/// with its own buffer (x86-64/arm64 Linux layouts).
/// </summary>
internal static unsafe partial class LinuxEpoll
{
    public const uint EpollIn = 0x001;
    public const int EpollCtlAdd = 1;
    public const int EpollCtlDel = 2;
    public const int EpollCloexec = 0x80000;
    public const int MsgDontWait = 0x40;
    public const int AfInet = 2;
    public const int AfInet6 = 10;
    public const int SockaddrIn6Length = 28;
    public const int SockaddrInLength = 16;

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int Create(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int Control(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int Wait(int epfd, byte* events, int maxEvents, int timeoutMs);

    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    public static partial nint SendTo(int fd, byte* buffer, nuint length, int flags, byte* address, uint addressLength);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    /// <summary>struct epoll_event is packed on x86-64 (12 bytes) but naturally aligned on arm64 (16).</summary>
    public static readonly int EventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    private static readonly int EventDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    public static void WriteEvent(byte* slot, uint events, ulong data)
    {
        *(uint*)slot = events;
        Unsafe.WriteUnaligned(slot + EventDataOffset, data);
    }

    public static ulong ReadEventData(byte* slot) => Unsafe.ReadUnaligned<ulong>(slot + EventDataOffset);

    /// <summary>
    /// One non-blocking sendto on a socket another thread may be closing. The reference on the handle
    /// keeps the descriptor from being closed, and its number reused, during the call. False when the
    /// datagram was not sent (full buffer, unreachable, or the socket is gone).
    /// </summary>
    public static bool TrySendTo(SafeHandle socket, ReadOnlySpan<byte> data, ReadOnlySpan<byte> address)
    {
        var added = false;
        try
        {
            socket.DangerousAddRef(ref added);
            fixed (byte* payload = data)
            fixed (byte* name = address)
            {
                return SendTo((int)socket.DangerousGetHandle(), payload, (nuint)data.Length, MsgDontWait, name, (uint)address.Length) >= 0;
            }
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            if (added)
            {
                socket.DangerousRelease();
            }
        }
    }
}
