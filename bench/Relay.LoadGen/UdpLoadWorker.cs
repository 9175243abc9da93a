using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>One UDP socket (one source port); requests and responses are single datagrams.</summary>
internal sealed class UdpLoadWorker : LoadWorker
{
    private readonly Socket _socket;
    private readonly SocketAddress _targetAddress;
    private readonly byte[] _receiveBuffer = new byte[2048];
    private readonly bool _connected;
    private Task _completion = Task.CompletedTask;

    public UdpLoadWorker(RunState run, IPEndPoint target, int window, bool fingerprint, int index, bool connected)
        : base(run, target, window, fingerprint, index)
    {
        _socket = new Socket(target.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        _socket.Bind(new IPEndPoint(
            target.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
        _targetAddress = target.Serialize();
        _connected = connected;
        if (connected)
        {
            // A connected socket skips the per-datagram route lookup and lets the kernel drop
            // foreign senders, which makes the generator cheaper when it shares a core.
            _socket.Connect(target);
        }
    }

    public override Task Completion => _completion;

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        _completion = ReceiveLoopAsync();
        PrimeWindow();
        return Task.CompletedTask;
    }

    protected override void Transmit(ReadOnlySpan<byte> batch)
    {
        for (var offset = 0; offset < batch.Length; offset += RequestLength)
        {
            try
            {
                if (_connected)
                {
                    _socket.Send(batch.Slice(offset, RequestLength), SocketFlags.None);
                }
                else
                {
                    _socket.SendTo(batch.Slice(offset, RequestLength), SocketFlags.None, _targetAddress);
                }
            }
            catch (SocketException)
            {
                // ICMP unreachable from an earlier datagram, or a full send buffer: the slot times out
                // and is replaced, which is the behaviour we want to measure.
                Errors++;
            }
        }
    }

    protected override void CloseTransport() => _socket.Dispose();

    private async Task ReceiveLoopAsync()
    {
        var from = new SocketAddress(Target.AddressFamily);
        var buffer = _receiveBuffer.AsMemory();
        while (true)
        {
            int received;
            try
            {
                // The Memory/SocketAddress overload reuses the socket's cached event args, so the
                // steady state allocates nothing per datagram.
                received = _connected
                    ? await _socket.ReceiveAsync(buffer, SocketFlags.None, CancellationToken.None)
                    : await _socket.ReceiveFromAsync(buffer, SocketFlags.None, from, CancellationToken.None);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset)
            {
                lock (Gate)
                {
                    Errors++;
                }

                continue;
            }
            catch (SocketException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }

            var now = Stopwatch.GetTimestamp();
            lock (Gate)
            {
                if (!_connected && !from.Equals(_targetAddress))
                {
                    Invalid++;
                    continue;
                }

                HandleResponseLocked(_receiveBuffer.AsSpan(0, received), now);
                FlushBatch();
            }
        }
    }
}
