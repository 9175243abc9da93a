using System.IO.Pipelines;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Server.Transport.Linux;

namespace Relay.Server.Turn;

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
internal sealed class UdpClientSink : TurnClientSink
{
    private readonly Socket _socket;
    private readonly byte[] _address = new byte[LinuxEpoll.SockaddrIn6Length];
    private readonly int _addressLength;

    public UdpClientSink(Socket listeningSocket, in StunAddress client)
    {
        _socket = listeningSocket;
        _addressLength = LinuxSocketAddress.Write(client, listeningSocket.AddressFamily, _address);
    }

    public override bool IsStream => false;

    public override bool TrySend(ReadOnlySpan<byte> frame) =>
        LinuxEpoll.TrySendTo(_socket.SafeHandle, frame, _address.AsSpan(0, _addressLength));

    /// <summary>The listening socket's descriptor, for batched sends from the relay loop.</summary>
    public System.Runtime.InteropServices.SafeHandle SocketHandle => _socket.SafeHandle;

    /// <summary>The client's native sockaddr, as the listening socket expects it.</summary>
    public ReadOnlySpan<byte> Address => _address.AsSpan(0, _addressLength);
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
    private readonly Action _onFlushed;
    private ValueTask<FlushResult> _pendingFlush;
    private bool _flushPending;
    private bool _completed;

    // Only the connection's own loop waits for a flush (responses must not be lost); relayed data never
    // waits, so this is created on the control path and the relay path allocates nothing.
    private TaskCompletionSource? _flushed;

    public StreamClientSink(PipeWriter output)
    {
        _output = output;
        _onFlushed = OnFlushed;
    }

    public override bool IsStream => true;

    public override bool TrySend(ReadOnlySpan<byte> frame)
    {
        lock (_gate)
        {
            if (_completed || _flushPending)
            {
                return false;
            }

            Append(frame);
            Flush();
            return true;
        }
    }

    /// <summary>Writes a frame the connection must not lose (a response), waiting out backpressure.</summary>
    public async ValueTask<bool> SendAsync(ReadOnlyMemory<byte> frame)
    {
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                if (_completed)
                {
                    return false;
                }

                if (!_flushPending)
                {
                    Append(frame.Span);
                    Flush();
                    return true;
                }

                wait = WaitForFlush();
            }

            await wait.ConfigureAwait(false);
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
            if (_completed || _flushPending)
            {
                return false;
            }

            Append(frame);
            return true;
        }
    }

    /// <summary>Flushes what <see cref="TryWriteBuffered"/> appended and waits for it; false once the connection is gone.</summary>
    public async ValueTask<bool> FlushAsync()
    {
        Task wait;
        lock (_gate)
        {
            if (_completed)
            {
                return false;
            }

            if (!_flushPending)
            {
                Flush();
            }

            if (!_flushPending)
            {
                return !_completed;
            }

            wait = WaitForFlush();
        }

        await wait.ConfigureAwait(false);
        return true;
    }

    /// <summary>After this, nothing more is written: the connection is closing.</summary>
    public void Complete()
    {
        lock (_gate)
        {
            _completed = true;
            _flushed?.TrySetResult();
        }
    }

    private void Append(ReadOnlySpan<byte> frame)
    {
        frame.CopyTo(_output.GetSpan(frame.Length));
        _output.Advance(frame.Length);
    }

    /// <summary>
    /// Under the lock. A flush that cannot finish now (the client reads slower than we send) leaves a
    /// continuation on the pipe's own awaitable instead of turning it into a Task: no allocation.
    /// </summary>
    private void Flush()
    {
        var flush = _output.FlushAsync();
        if (flush.IsCompletedSuccessfully)
        {
            _completed |= flush.Result.IsCompleted;
            return;
        }

        _pendingFlush = flush;
        _flushPending = true;
        flush.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onFlushed);
    }

    private Task WaitForFlush() => (_flushed ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    private void OnFlushed()
    {
        TaskCompletionSource? waiters;
        lock (_gate)
        {
            try
            {
                _completed |= _pendingFlush.Result.IsCompleted;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The transport failed or was aborted; this runs on a pool thread, so nothing may escape.
                _completed = true;
            }

            _pendingFlush = default;
            _flushPending = false;
            waiters = _flushed;
            _flushed = null;
        }

        waiters?.TrySetResult();
    }
}
