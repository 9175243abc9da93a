using System.Runtime.InteropServices;

namespace Relay.Server.Transport.Linux;

/// <summary>
/// recvmmsg(2) and sendmmsg(2): one system call moves a whole batch of datagrams. For a request/response
/// protocol like STUN the per-call overhead is most of the cost per packet, so batching is how a UDP
/// server gets its throughput (layouts are x86-64/arm64 Linux, LP64).
/// </summary>
internal static unsafe partial class LinuxUdp
{
    public const int MsgWaitForOne = 0x10000;
    public const int MsgTrunc = 0x20;
    public const int EAgain = 11;
    public const int EIntr = 4;
    public const int EBadF = 9;
    public const int ENotSock = 88;

    /// <summary>Room for a sockaddr_in6 (28 bytes), rounded up.</summary>
    public const int SocketAddressSlot = 32;

    public static bool IsSupported => OperatingSystem.IsLinux() && (RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64);

    [LibraryImport("libc", EntryPoint = "recvmmsg", SetLastError = true)]
    public static partial int RecvMmsg(int fd, MMsgHdr* messages, uint count, int flags, void* timeout);

    [LibraryImport("libc", EntryPoint = "sendmmsg", SetLastError = true)]
    public static partial int SendMmsg(int fd, MMsgHdr* messages, uint count, int flags);

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
