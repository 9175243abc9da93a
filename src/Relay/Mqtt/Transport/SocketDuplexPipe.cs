using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace Relay.Server.Mqtt.Transport;

/// <summary>
/// A connected TCP socket as the <see cref="IDuplexPipe"/> an <see cref="MqttConnection"/> runs on, built for
/// fleets of mostly idle devices: an idle connection holds no buffer at all. Reads first wait for data with a
/// zero-byte receive and only then rent a buffer, which goes back to the pool as soon as every byte has been
/// consumed; writes go into a rented buffer that is handed to the kernel on flush and returned after it.
/// Kestrel's socket transport keeps two <see cref="Pipe"/>s, their schedulers and a connection context per
/// connection, about 5 KB while idle; this keeps the socket and two small objects (docs/benchmarks.md).
/// </summary>
/// <remarks>
/// The contract it serves is the session's: one reader (the read loop) that calls ReadAsync/AdvanceTo in
/// turn and CancelPendingRead from any thread to end the connection; writers that write and flush under
/// the session's write lock, and at most one flush in progress.
/// </remarks>
internal sealed class SocketDuplexPipe : IDuplexPipe, IDisposable
{
    // Sized for a device's packets (CONNECT, SUBACK, a small PUBLISH): a connection storm of 15,000 devices
    // then churns kilobytes, not megabytes, of pooled arrays. Busy connections grow their reads (below).
    private const int MinimumBufferSize = 512;
    private const int MaximumReceiveSize = 64 * 1024;

    private readonly SocketReader _reader;
    private readonly SocketWriter _writer;

    public SocketDuplexPipe(Socket socket)
    {
        Socket = socket;
        _reader = new SocketReader(socket);
        _writer = new SocketWriter(socket);
    }

    public Socket Socket { get; }

    public PipeReader Input => _reader;

    public PipeWriter Output => _writer;

    /// <summary>True while either direction holds a rented buffer; an idle connection holds none.</summary>
    internal bool HoldsBuffers => _reader.HoldsBuffer || _writer.HoldsBuffer;

    /// <summary>
    /// Lets what the session wrote last (a final DISCONNECT) leave, bounded by <paramref name="drainTimeout"/>,
    /// then sends FIN and releases the socket and any buffer still held.
    /// </summary>
    public async ValueTask CloseAsync(TimeSpan drainTimeout)
    {
        _writer.Complete();
        try
        {
            await _writer.WhenDrainedAsync().WaitAsync(drainTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // A peer that reads nothing does not get to hold the connection open.
        }

        Dispose();
    }

    /// <summary>Closes at once: FIN (or RST for unsent data), socket and buffers released.</summary>
    public void Dispose()
    {
        try
        {
            Socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already reset by the peer: nothing to say goodbye to.
        }

        Socket.Dispose();
        _reader.Complete();
        _writer.Complete();
    }

    private static byte[] Grow(byte[]? current, int used, int needed)
    {
        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(MinimumBufferSize, Math.Max(needed, used * 2)));
        if (current is not null)
        {
            current.AsSpan(0, used).CopyTo(bigger);
            ArrayPool<byte>.Shared.Return(current);
        }

        return bigger;
    }

    private sealed class SocketReader(Socket socket) : PipeReader
    {
        public bool HoldsBuffer => _buffer is not null;

        private byte[]? _buffer;
        private int _start;
        private int _end;
        private bool _examinedEverything = true;
        private bool _endOfStream;
        private bool _cancelRequested;

        // How much to ask for when a buffer is rented: doubles while receives fill it, halves while they don't.
        private int _receiveSize = MinimumBufferSize;

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            if (TryRead(out var ready))
            {
                return ready;
            }

            if (EndRequested())
            {
                return Result(canceled: true);
            }

            try
            {
                if (_start == _end)
                {
                    // Wait for readability without holding memory: this is where an idle device spends its life.
                    // The peer's FIN wakes it too (the receive below then reads 0), and so does CancelPendingRead.
                    ReleaseBuffer();
                    await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                    if (EndRequested())
                    {
                        return Result(canceled: true);
                    }
                }

                EnsureSpace();
                var space = _buffer!.Length - _end;
                var received = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken).ConfigureAwait(false);
                _receiveSize = received == space ? Math.Min(_receiveSize * 2, MaximumReceiveSize)
                    : received < _receiveSize / 4 ? Math.Max(_receiveSize / 2, MinimumBufferSize)
                    : _receiveSize;
                if (received == 0)
                {
                    if (EndRequested())
                    {
                        return Result(canceled: true);
                    }

                    _endOfStream = true;
                }

                _end += received;
                return Result(canceled: false);
            }
            catch (SocketException)
            {
                // Reset by the peer: the session treats it as the end of the stream.
                _endOfStream = true;
                return Result(canceled: false);
            }
        }

        public override bool TryRead(out ReadResult result)
        {
            if ((_start < _end && !_examinedEverything) || _endOfStream)
            {
                result = Result(canceled: false);
                return true;
            }

            result = default;
            return false;
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            if (_buffer is null)
            {
                return;
            }

            // Both positions come from Result(): offsets into _buffer.
            _start = consumed.GetInteger();
            _examinedEverything = examined.GetInteger() >= _end;
            if (_start == _end)
            {
                ReleaseBuffer();
            }
        }

        /// <summary>
        /// The session calls this only to end the connection (keep-alive, takeover, shutdown), so a waiting
        /// receive is woken by shutting the receive side: no cancellation source per connection, which an idle
        /// device would otherwise carry, registration included, for its whole life. Sending still works, so a
        /// v5 DISCONNECT can follow.
        /// </summary>
        public override void CancelPendingRead()
        {
            Volatile.Write(ref _cancelRequested, true);
            try
            {
                socket.Shutdown(SocketShutdown.Receive);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // Already closed: the read loop is ending anyway.
            }
        }

        /// <summary>Called once the read loop has ended (the only reader), so the buffer is no longer in use.</summary>
        public override void Complete(Exception? exception = null) => ReleaseBuffer();

        private bool EndRequested() => Volatile.Read(ref _cancelRequested);

        private ReadResult Result(bool canceled) =>
            new(_buffer is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(_buffer, _start, _end - _start), canceled, _endOfStream);

        // Room for at least one more receive. A packet larger than the buffer grows it; the frame reader has
        // already checked the packet's declared size against Relay:Mqtt:MaxPacketSize, so growth is bounded.
        private void EnsureSpace()
        {
            if (_buffer is not null && _end < _buffer.Length)
            {
                return;
            }

            var unread = _end - _start;
            if (_buffer is not null && _start > 0)
            {
                _buffer.AsSpan(_start, unread).CopyTo(_buffer);
            }
            else
            {
                _buffer = Grow(_buffer, unread, unread + _receiveSize);
            }

            _start = 0;
            _end = unread;
        }

        private void ReleaseBuffer()
        {
            if (_buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = null;
            }

            _start = _end = 0;
            _examinedEverything = true;
        }
    }

    /// <summary>
    /// Writes accumulate in a rented buffer that only the writing thread touches; a flush moves it to the
    /// pending slot, and one send loop on the thread pool sends whatever is pending. Publishes reaching a
    /// subscriber from many publishers' threads thus leave in as few sends as the socket allows (what
    /// Kestrel's output pipe does). A flush waits only while more than <see cref="PauseThreshold"/> bytes are
    /// unsent: that is the back-pressure the session treats as congestion.
    /// </summary>
    private sealed class SocketWriter(Socket socket) : PipeWriter, IThreadPoolWorkItem, IValueTaskSource<FlushResult>
    {
        private const int PauseThreshold = 64 * 1024;

        private readonly object _gate = new();
        private ManualResetValueTaskSourceCore<FlushResult> _flushWaiter = new() { RunContinuationsAsynchronously = true };

        // The writer's own buffer: touched only by the thread that writes (the session serializes writers).
        private byte[]? _buffer;
        private int _written;

        // Flushed and not yet taken by the send loop; under _gate.
        private byte[]? _pending;
        private int _pendingLength;
        private int _sendingBytes;
        private bool _sending;
        private bool _flushWaiting;
        private bool _completed;
        private bool _failed;
        private TaskCompletionSource? _drained;

        public bool HoldsBuffer
        {
            get
            {
                lock (_gate)
                {
                    return _buffer is not null || _pending is not null || _sending;
                }
            }
        }

        public override bool CanGetUnflushedBytes => true;

        public override long UnflushedBytes => _written;

        public override void Advance(int bytes) => _written += bytes;

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            EnsureSpace(sizeHint);
            return _buffer.AsMemory(_written);
        }

        public override Span<byte> GetSpan(int sizeHint = 0)
        {
            EnsureSpace(sizeHint);
            return _buffer.AsSpan(_written);
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            lock (_gate)
            {
                if (_completed || _failed)
                {
                    return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: true));
                }

                CommitLocked();
                if (_pendingLength + _sendingBytes <= PauseThreshold)
                {
                    return new ValueTask<FlushResult>(default(FlushResult));
                }

                _flushWaiter.Reset();
                _flushWaiting = true;
                return new ValueTask<FlushResult>(this, _flushWaiter.Version);
            }
        }

        /// <summary>Completes once everything flushed (or committed by Complete) has been sent, or the peer is gone.</summary>
        public Task WhenDrainedAsync()
        {
            lock (_gate)
            {
                if (!_sending && _pending is null)
                {
                    return Task.CompletedTask;
                }

                _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                return _drained.Task;
            }
        }

        // Moves what was written into the pending slot and makes sure the send loop runs.
        private void CommitLocked()
        {
            if (_written == 0)
            {
                return;
            }

            if (_pending is null)
            {
                _pending = _buffer;
                _pendingLength = _written;
            }
            else
            {
                // The send loop is behind: coalesce into what it will send next.
                if (_pending.Length - _pendingLength < _written)
                {
                    _pending = Grow(_pending, _pendingLength, _pendingLength + _written);
                }

                _buffer.AsSpan(0, _written).CopyTo(_pending.AsSpan(_pendingLength));
                _pendingLength += _written;
                ArrayPool<byte>.Shared.Return(_buffer!);
            }

            _buffer = null;
            _written = 0;
            if (!_sending)
            {
                _sending = true;
                ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            }
        }

        void IThreadPoolWorkItem.Execute() => _ = SendLoopAsync();

        private async Task SendLoopAsync()
        {
            while (true)
            {
                byte[] outgoing;
                int length;
                lock (_gate)
                {
                    if (_pending is null)
                    {
                        _sending = false;
                        _sendingBytes = 0;
                        ReleaseWaiter(completed: _completed);
                        _drained?.TrySetResult();
                        return;
                    }

                    outgoing = _pending;
                    length = _pendingLength;
                    _pending = null;
                    _pendingLength = 0;
                    _sendingBytes = length;
                    if (length <= PauseThreshold)
                    {
                        ReleaseWaiter(completed: false);
                    }
                }

                try
                {
                    await socket.SendAsync(outgoing.AsMemory(0, length), SocketFlags.None).ConfigureAwait(false);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    lock (_gate)
                    {
                        // The peer is gone: flushes report completion, as a Pipe does once its reader has finished.
                        _failed = true;
                        _sending = false;
                        _sendingBytes = 0;
                        ReturnPending();
                        ReleaseWaiter(completed: true);
                        _drained?.TrySetResult();
                    }

                    return;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(outgoing);
                }
            }
        }

        private void ReleaseWaiter(bool completed)
        {
            if (_flushWaiting)
            {
                _flushWaiting = false;
                _flushWaiter.SetResult(new FlushResult(isCanceled: false, isCompleted: completed));
            }
        }

        private void ReturnPending()
        {
            if (_pending is not null)
            {
                ArrayPool<byte>.Shared.Return(_pending);
                _pending = null;
                _pendingLength = 0;
            }
        }

        public override void CancelPendingFlush()
        {
            // The session never cancels a flush; a closing connection completes the writer instead.
        }

        /// <summary>No more writes. What was written still goes out (as a Pipe commits it); the owner waits for
        /// <see cref="WhenDrainedAsync"/> before closing the socket.</summary>
        public override void Complete(Exception? exception = null)
        {
            lock (_gate)
            {
                if (_completed)
                {
                    return;
                }

                _completed = true;
                ReleaseWaiter(completed: true);
                if (!_failed)
                {
                    CommitLocked();
                }

                if (_buffer is not null)
                {
                    ArrayPool<byte>.Shared.Return(_buffer);
                    _buffer = null;
                }

                _written = 0;
            }
        }

        FlushResult IValueTaskSource<FlushResult>.GetResult(short token) => _flushWaiter.GetResult(token);

        ValueTaskSourceStatus IValueTaskSource<FlushResult>.GetStatus(short token) => _flushWaiter.GetStatus(token);

        void IValueTaskSource<FlushResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _flushWaiter.OnCompleted(continuation, state, token, flags);

        private void EnsureSpace(int sizeHint)
        {
            var needed = Math.Max(sizeHint, 1);
            if (_buffer is null || _buffer.Length - _written < needed)
            {
                _buffer = Grow(_buffer, _written, _written + needed);
            }
        }
    }
}
