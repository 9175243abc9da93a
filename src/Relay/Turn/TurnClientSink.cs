using System.IO.Pipelines;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Turn;

/// <summary>How relayed data and server messages reach the client of an allocation.</summary>
internal abstract class TurnClientSink
{
    /// <summary>Stream transports pad ChannelData to 4 bytes (RFC 8656 §12.5); UDP does not.</summary>
    public abstract bool IsStream { get; }

    /// <summary>
    /// Sends one complete frame (ChannelData or a STUN message). False when it was dropped: a full socket
    /// buffer, or a stream client that is not reading (data from UDP peers cannot be pushed back, so it
    /// is shed and counted instead of queued without bound).
    /// </summary>
    public abstract bool TrySend(ReadOnlySpan<byte> frame);
}

/// <summary>Sends from the listening socket the client reached, so the reply's 5-tuple is the client's.</summary>
internal sealed unsafe class UdpClientSink : TurnClientSink
{
    private readonly Socket _socket;
    private readonly byte[] _address = new byte[LinuxEpoll.SockaddrIn6Length];
    private readonly int _addressLength;

    public UdpClientSink(Socket listeningSocket, in StunAddress client)
    {
        _socket = listeningSocket;
        _addressLength = LinuxEpoll.WriteSockaddr(client, listeningSocket.AddressFamily, _address);
    }

    public override bool IsStream => false;

    public override bool TrySend(ReadOnlySpan<byte> frame)
    {
        var handle = _socket.SafeHandle;
        var added = false;
        try
        {
            // The reference keeps the descriptor from being closed and reused under us during shutdown.
            handle.DangerousAddRef(ref added);
            fixed (byte* data = frame)
            fixed (byte* address = _address)
            {
                return LinuxEpoll.SendTo((int)handle.DangerousGetHandle(), data, (nuint)frame.Length, LinuxEpoll.MsgDontWait, address, (uint)_addressLength) >= 0;
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
                handle.DangerousRelease();
            }
        }
    }
}

/// <summary>
/// A TCP or TLS client connection's output. A PipeWriter takes no new data while a flush waits for the
/// socket, so frames relayed while the client is slow are dropped (backpressure reaches UDP peers as
/// loss, as on any congested path); the connection's own responses wait for the flush instead.
/// </summary>
internal sealed class StreamClientSink : TurnClientSink
{
    private readonly object _gate = new();
    private readonly PipeWriter _output;
    private Task? _pendingFlush;
    private bool _completed;

    public StreamClientSink(PipeWriter output) => _output = output;

    public override bool IsStream => true;

    public override bool TrySend(ReadOnlySpan<byte> frame)
    {
        lock (_gate)
        {
            if (_completed || _pendingFlush is { IsCompleted: false })
            {
                return false;
            }

            WriteAndFlush(frame);
            return true;
        }
    }

    /// <summary>Writes a frame the connection must not lose (a response), waiting out backpressure.</summary>
    public async ValueTask<bool> SendAsync(ReadOnlyMemory<byte> frame)
    {
        while (true)
        {
            Task? pending;
            lock (_gate)
            {
                if (_completed)
                {
                    return false;
                }

                pending = _pendingFlush;
                if (pending is null || pending.IsCompleted)
                {
                    WriteAndFlush(frame.Span);
                    return true;
                }
            }

            await pending.ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Appends a response without flushing, so a read that carried many requests is answered with one
    /// flush. False when a flush is still pending; the caller then falls back to <see cref="SendAsync"/>.
    /// </summary>
    public bool TryWriteBuffered(ReadOnlySpan<byte> frame)
    {
        lock (_gate)
        {
            if (_completed || _pendingFlush is { IsCompleted: false })
            {
                return false;
            }

            frame.CopyTo(_output.GetSpan(frame.Length));
            _output.Advance(frame.Length);
            return true;
        }
    }

    /// <summary>Flushes what <see cref="TryWriteBuffered"/> appended; false once the connection is gone.</summary>
    public async ValueTask<bool> FlushAsync()
    {
        Task? pending;
        lock (_gate)
        {
            if (_completed)
            {
                return false;
            }

            if (_pendingFlush is null || _pendingFlush.IsCompleted)
            {
                var flush = _output.FlushAsync();
                if (flush.IsCompletedSuccessfully)
                {
                    _completed |= flush.Result.IsCompleted;
                    _pendingFlush = null;
                    return !_completed;
                }

                _pendingFlush = flush.AsTask();
            }

            pending = _pendingFlush;
        }

        await pending.ConfigureAwait(false);
        return true;
    }

    /// <summary>After this, nothing more is written: the connection is closing.</summary>
    public void Complete()
    {
        lock (_gate)
        {
            _completed = true;
        }
    }

    private void WriteAndFlush(ReadOnlySpan<byte> frame)
    {
        frame.CopyTo(_output.GetSpan(frame.Length));
        _output.Advance(frame.Length);
        var flush = _output.FlushAsync();
        if (flush.IsCompletedSuccessfully)
        {
            var result = flush.Result;
            _completed |= result.IsCompleted;
            _pendingFlush = null;
        }
        else
        {
            _pendingFlush = flush.AsTask();
        }
    }
}
