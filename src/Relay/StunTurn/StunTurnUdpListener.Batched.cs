using System.Net.Sockets;
using System.Net;
using System.Runtime.InteropServices;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.Transport.Linux;

namespace Relay.Server.StunTurn;

internal sealed unsafe partial class StunTurnUdpListener
{
    /// <summary>
    /// One dedicated thread per socket: block in recvmmsg for up to a batch of requests, answer them all,
    /// send the answers with one sendmmsg. No thread-pool hop, no async state machine, no allocation.
    /// SO_RCVTIMEO wakes the thread periodically so it can notice shutdown.
    /// </summary>
    private void BatchedReceiveLoop(EndpointGroup group, Socket socket, int batchSize)
    {
        var addedRef = false;
        var handle = socket.SafeHandle;
        var messageSize = ReceiveSlotSize;
        var responseSize = _service.ResponseBufferSize;
        var memory = (byte*)NativeMemory.AlignedAlloc(
            (nuint)(batchSize * (messageSize + responseSize + (2 * LinuxUdp.SocketAddressSlot) + (2 * sizeof(LinuxUdp.IoVec)) + (2 * sizeof(LinuxUdp.MMsgHdr)))),
            64);
        try
        {
            // Keeps the descriptor open while we use it raw: Dispose() during shutdown only closes it once we release.
            handle.DangerousAddRef(ref addedRef);
            var fd = (int)handle.DangerousGetHandle();

            var receiveHeaders = (LinuxUdp.MMsgHdr*)memory;
            var sendHeaders = receiveHeaders + batchSize;
            var receiveIov = (LinuxUdp.IoVec*)(sendHeaders + batchSize);
            var sendIov = receiveIov + batchSize;
            var receiveNames = (byte*)(sendIov + batchSize);
            var sendNames = receiveNames + (batchSize * LinuxUdp.SocketAddressSlot);
            var receiveBuffers = sendNames + (batchSize * LinuxUdp.SocketAddressSlot);
            var responseBuffers = receiveBuffers + (batchSize * messageSize);
            for (var i = 0; i < batchSize; i++)
            {
                receiveIov[i] = new LinuxUdp.IoVec { Base = receiveBuffers + (i * messageSize), Length = (nuint)messageSize };
                receiveHeaders[i] = new LinuxUdp.MMsgHdr { Header = new LinuxUdp.MsgHdr { Iov = receiveIov + i, IovLength = 1 } };
                sendIov[i] = new LinuxUdp.IoVec { Base = responseBuffers + (i * responseSize) };
                sendHeaders[i] = new LinuxUdp.MMsgHdr { Header = new LinuxUdp.MsgHdr { Iov = sendIov + i, IovLength = 1, Name = sendNames + (i * LinuxUdp.SocketAddressSlot) } };
            }

            var scratch = new SocketAddress(socket.AddressFamily);
            var context = new StunRequestContext(default, group.Local, StunTransport.Udp);
            while (!_stopping)
            {
                for (var i = 0; i < batchSize; i++)
                {
                    receiveHeaders[i].Header.Name = receiveNames + (i * LinuxUdp.SocketAddressSlot);
                    receiveHeaders[i].Header.NameLength = LinuxUdp.SocketAddressSlot;
                    receiveHeaders[i].Header.Flags = 0;
                }

                var received = LinuxUdp.RecvMmsg(fd, receiveHeaders, (uint)batchSize, LinuxUdp.MsgWaitForOne, null);
                if (received < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno is LinuxUdp.EBadF or LinuxUdp.ENotSock)
                    {
                        return;
                    }

                    if (errno is not (LinuxUdp.EAgain or LinuxUdp.EIntr))
                    {
                        // ICMP errors from earlier sends (ECONNREFUSED...) concern one peer, not the socket.
                        LogReceiveError(group.Local.ToIPEndPoint(), (SocketError)errno);
                    }

                    continue;
                }

                var replies = 0;
                for (var i = 0; i < received; i++)
                {
                    var name = new Span<byte>(receiveNames + (i * LinuxUdp.SocketAddressSlot), (int)receiveHeaders[i].Header.NameLength);
                    if ((receiveHeaders[i].Header.Flags & LinuxUdp.MsgTrunc) != 0)
                    {
                        _metrics.Drop(StunTransport.Udp, StunDropReason.TooLarge);
                        continue;
                    }

                    var client = StunAddress.FromNativeSocketAddress(name, socket.AddressFamily);
                    var datagram = new ReadOnlySpan<byte>(receiveBuffers + (i * messageSize), (int)receiveHeaders[i].Length);
                    if (_rateLimiter is not null && IsRateLimited(datagram) && !_rateLimiter.TryAcquire(client))
                    {
                        _metrics.Drop(StunTransport.Udp, StunDropReason.RateLimited);
                        ReportRateLimited(client);
                        continue;
                    }

                    var response = new Span<byte>(responseBuffers + (replies * responseSize), responseSize);
                    context = context with { Client = client };
                    var reply = Dispatch(datagram, context, group.Sockets[0], response);
                    if (!reply.HasResponse)
                    {
                        continue;
                    }

                    var target = new Span<byte>(sendNames + (replies * LinuxUdp.SocketAddressSlot), LinuxUdp.SocketAddressSlot);
                    name.CopyTo(target);
                    if (reply.ResponsePort != 0)
                    {
                        // RFC 5780 §6.1: RESPONSE-PORT redirects to the same IP, another port; never another host.
                        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(target[2..], reply.ResponsePort);
                    }

                    if (reply.Source != StunResponseSource.Same)
                    {
                        // RFC 5780 CHANGE-REQUEST: rare, answered from another socket of the group set.
                        SendFromOtherSocket(group, reply, response[..reply.Length], target[..name.Length], scratch);
                        continue;
                    }

                    sendHeaders[replies].Header.NameLength = (uint)name.Length;
                    sendIov[replies].Length = (nuint)reply.Length;
                    replies++;
                }

                SendAll(fd, sendHeaders, replies);
            }
        }
        finally
        {
            if (addedRef)
            {
                handle.DangerousRelease();
            }

            NativeMemory.AlignedFree(memory);
        }
    }

    private void SendAll(int fd, LinuxUdp.MMsgHdr* headers, int count)
    {
        var offset = 0;
        while (offset < count)
        {
            var sent = LinuxUdp.SendMmsg(fd, headers + offset, (uint)(count - offset), 0);
            if (sent > 0)
            {
                offset += sent;
                continue;
            }

            var errno = Marshal.GetLastPInvokeError();
            if (sent < 0 && errno == LinuxUdp.EIntr)
            {
                continue;
            }

            // The first message of the rest failed (e.g. a full send buffer): count it, move on.
            _metrics.Drop(StunTransport.Udp, StunDropReason.SendFailed);
            offset++;
        }
    }

    private void SendFromOtherSocket(EndpointGroup group, StunReply reply, ReadOnlySpan<byte> response, ReadOnlySpan<byte> nativeTarget, SocketAddress scratch)
    {
        var sender = FindSocket(group.Local, reply.Source);
        if (sender is null)
        {
            return;
        }

        nativeTarget.CopyTo(scratch.Buffer.Span);
        scratch.Size = nativeTarget.Length;
        try
        {
            sender.SendTo(response, SocketFlags.None, scratch);
        }
        catch (SocketException)
        {
            _metrics.Drop(StunTransport.Udp, StunDropReason.SendFailed);
        }
        catch (ObjectDisposedException)
        {
            // Shutting down.
        }
    }
}
