using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;

namespace Relay.Mqtt.Transport;

/// <summary>
/// A connected TCP socket as the <see cref="IDuplexPipe"/> an <see cref="MqttSession"/> runs on, built for
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
    // A whole idle device's worth of traffic (CONNECT, SUBSCRIBE, a small PUBLISH) fits in one buffer.
    private const int MinimumBufferSize = 4096;

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

    /// <summary>Sends FIN after what was flushed, then releases the socket and any buffer still held.</summary>
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
        private readonly object _gate = new();
        private CancellationTokenSource? _cancel;
        private byte[]? _buffer;
        private int _start;
        private int _end;
        private bool _examinedEverything = true;
        private bool _endOfStream;
        private bool _cancelRequested;
        private bool _completed;

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            if (TryRead(out var ready))
            {
                return ready;
            }

            CancellationToken token;
            lock (_gate)
            {
                if (ConsumeCancelRequest())
                {
                    return Result(canceled: true);
                }

                // Created on the first wait and kept: the read loop waits again and again.
                _cancel ??= new CancellationTokenSource();
                token = _cancel.Token;
            }

            try
            {
                using var linked = cancellationToken.CanBeCanceled ? cancellationToken.UnsafeRegister(static state => ((SocketReader)state!).CancelPendingRead(), this) : default;
                if (_start == _end)
                {
                    // Wait for readability without holding memory: this is where an idle device spends its life.
                    // The peer's FIN wakes it too; the receive below then reads 0.
                    ReleaseBuffer();
                    await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, token).ConfigureAwait(false);
                }

                EnsureSpace();
                var received = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, token).ConfigureAwait(false);
                if (received == 0)
                {
                    _endOfStream = true;
                }

                _end += received;
                return Result(canceled: false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                lock (_gate)
                {
                    _ = ConsumeCancelRequest();
                    if (!_cancel!.TryReset())
                    {
                        _cancel.Dispose();
                        _cancel = null;
                    }
                }

                return Result(canceled: true);
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

        public override void CancelPendingRead()
        {
            lock (_gate)
            {
                _cancelRequested = true;
                _cancel?.Cancel();
            }
        }

        public override void Complete(Exception? exception = null)
        {
            lock (_gate)
            {
                if (_completed)
                {
                    return;
                }

                _completed = true;
                _cancel?.Dispose();
                _cancel = null;
            }

            ReleaseBuffer();
        }

        private bool ConsumeCancelRequest()
        {
            var requested = _cancelRequested;
            _cancelRequested = false;
            return requested;
        }

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
                _buffer = Grow(_buffer, unread, unread + MinimumBufferSize);
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

    private sealed class SocketWriter(Socket socket) : PipeWriter
    {
        private byte[]? _buffer;
        private int _written;
        private bool _completed;

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
            if (_completed)
            {
                return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: true));
            }

            if (_written == 0)
            {
                return new ValueTask<FlushResult>(default(FlushResult));
            }

            // The bytes leave with the send; writes made meanwhile go to a fresh buffer.
            var outgoing = _buffer!;
            var length = _written;
            _buffer = null;
            _written = 0;
            var send = socket.SendAsync(outgoing.AsMemory(0, length), SocketFlags.None, cancellationToken);
            if (send.IsCompletedSuccessfully)
            {
                _ = send.Result;
                ArrayPool<byte>.Shared.Return(outgoing);
                return new ValueTask<FlushResult>(default(FlushResult));
            }

            return FinishSendAsync(send, outgoing);
        }

        public override void CancelPendingFlush()
        {
            // The session never cancels a flush; a closing connection completes the writer instead.
        }

        public override void Complete(Exception? exception = null)
        {
            _completed = true;
            if (_buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = null;
            }

            _written = 0;
        }

        private static async ValueTask<FlushResult> FinishSendAsync(ValueTask<int> send, byte[] outgoing)
        {
            try
            {
                await send.ConfigureAwait(false);
                return default;
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
            {
                // The peer is gone: report the writer as completed, as a Pipe does when its reader has finished.
                return new FlushResult(isCanceled: false, isCompleted: true);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(outgoing);
            }
        }

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
