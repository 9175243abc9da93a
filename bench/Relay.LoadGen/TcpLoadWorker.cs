using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>
/// One TCP connection with pipelined requests. Responses are framed by the STUN header length
/// (RFC 8489 §6.2.2: no extra framing for plain TCP), and all replacements triggered by one read are
/// written back in a single send. A connection the server closes is re-established (coturn, for
/// one, closes allocation-less TCP sessions after a few seconds), with its outstanding transactions
/// counted as lost.
/// </summary>
internal sealed class TcpLoadWorker : LoadWorker
{
    private readonly byte[] _receiveBuffer = new byte[64 * 1024];
    private Socket _socket;
    private Task _completion = Task.CompletedTask;

    public TcpLoadWorker(RunState run, IPEndPoint target, int window, bool fingerprint, int index)
        : base(run, target, window, fingerprint, index)
    {
        _socket = NewSocket(target);
    }

    public override Task Completion => _completion;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        await _socket.ConnectAsync(Target, cancellationToken);
        _completion = RunAsync();
        PrimeWindow();
    }

    protected override void Transmit(ReadOnlySpan<byte> batch)
    {
        try
        {
            _socket.Send(batch, SocketFlags.None);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // The receive loop notices the dead connection and reconnects.
            Errors++;
        }
    }

    protected override void CloseTransport()
    {
        lock (Gate)
        {
            _socket.Dispose();
        }
    }

    private static Socket NewSocket(IPEndPoint target) =>
        new(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };

    private async Task RunAsync()
    {
        while (true)
        {
            Socket socket;
            lock (Gate)
            {
                socket = _socket;
            }

            await PumpAsync(socket);
            if (!await ReconnectAsync())
            {
                return;
            }
        }
    }

    /// <summary>Reads responses until the connection ends for any reason.</summary>
    private async Task PumpAsync(Socket socket)
    {
        var filled = 0;
        while (true)
        {
            int received;
            try
            {
                received = await socket.ReceiveAsync(_receiveBuffer.AsMemory(filled), SocketFlags.None, CancellationToken.None);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            if (received == 0)
            {
                return;
            }

            filled += received;
            var now = Stopwatch.GetTimestamp();
            var consumed = 0;
            lock (Gate)
            {
                while (filled - consumed >= StunWire.HeaderLength)
                {
                    var frame = StunWire.FrameLength(_receiveBuffer.AsSpan(consumed));
                    if (frame > _receiveBuffer.Length)
                    {
                        // Not STUN (or a corrupt stream): resynchronising is impossible without
                        // framing, so drop this connection rather than misparse.
                        Invalid++;
                        return;
                    }

                    if (filled - consumed < frame)
                    {
                        break;
                    }

                    HandleResponseLocked(_receiveBuffer.AsSpan(consumed, frame), now);
                    consumed += frame;
                }

                FlushBatch();
            }

            if (consumed > 0)
            {
                _receiveBuffer.AsSpan(consumed, filled - consumed).CopyTo(_receiveBuffer);
                filled -= consumed;
            }
        }
    }

    private async Task<bool> ReconnectAsync()
    {
        lock (Gate)
        {
            if (IsFinishedLocked)
            {
                return false;
            }

            AbandonOutstandingLocked();
            Reconnects++;
            _socket.Dispose();
        }

        while (true)
        {
            var fresh = NewSocket(Target);
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await fresh.ConnectAsync(Target, timeout.Token);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                fresh.Dispose();
                lock (Gate)
                {
                    Errors++;
                    if (IsFinishedLocked)
                    {
                        return false;
                    }
                }

                await Task.Delay(50);
                continue;
            }

            lock (Gate)
            {
                if (IsFinishedLocked)
                {
                    fresh.Dispose();
                    return false;
                }

                _socket = fresh;
            }

            PrimeWindow();
            return true;
        }
    }
}
