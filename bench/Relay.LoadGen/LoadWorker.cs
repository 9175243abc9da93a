using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;

namespace Relay.LoadGen;

/// <summary>
/// One source endpoint (a UDP socket or a TCP connection) with a bounded window of outstanding
/// Binding transactions. All slot state is guarded by <see cref="Gate"/> because the receive loop and
/// the timeout sweeper both refill slots; the lock is almost never contended.
/// </summary>
internal abstract class LoadWorker : LoadCounters, IDisposable
{
    private readonly RunState _run;
    private readonly long[] _sentAt;
    private readonly byte[] _transactionIds;
    private readonly byte[] _batch;
    private readonly int _requestLength;
    private readonly bool _fingerprint;
    private int _batchLength;
    private ulong _rng;
    private bool _closed;

    protected LoadWorker(RunState run, IPEndPoint target, int window, bool fingerprint, int index)
    {
        _run = run;
        Target = target;
        Window = window;
        _fingerprint = fingerprint;
        _requestLength = StunWire.RequestLength(fingerprint);
        _sentAt = new long[window];
        _transactionIds = new byte[window * StunWire.TransactionIdLength];
        _batch = new byte[window * _requestLength];
        _rng = (ulong)Random.Shared.NextInt64() ^ ((ulong)index << 48) ^ 0x9E37_79B9_7F4A_7C15UL;
    }

    protected Lock Gate { get; } = new();

    protected IPEndPoint Target { get; }

    protected int Window { get; }

    protected int RequestLength => _requestLength;

    /// <summary>Must hold <see cref="Gate"/>. True once the run is over for this worker.</summary>
    protected bool IsFinishedLocked => _closed || _run.Phase == RunPhase.Drain;

    public abstract Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Completes when the receive loop has exited (after <see cref="Close"/>).</summary>
    public abstract Task Completion { get; }

    /// <summary>Replaces every transaction older than the timeout so loss cannot stall the window.</summary>
    public void ExpireOlderThan(long deadline)
    {
        lock (Gate)
        {
            if (_closed)
            {
                return;
            }

            var measuring = _run.Phase == RunPhase.Measure;
            var refill = _run.Phase != RunPhase.Drain;
            for (var slot = 0; slot < _sentAt.Length; slot++)
            {
                var sentAt = _sentAt[slot];
                if (sentAt == 0 || sentAt > deadline)
                {
                    continue;
                }

                _sentAt[slot] = 0;
                if (measuring)
                {
                    Lost++;
                }

                if (refill)
                {
                    QueueRequest(slot);
                }
            }

            FlushBatch();
        }
    }

    public void Close()
    {
        lock (Gate)
        {
            _closed = true;
        }

        CloseTransport();
    }

    public void Dispose()
    {
        Close();
        GC.SuppressFinalize(this);
    }

    /// <summary>Fills the whole window; called once the transport is ready.</summary>
    protected void PrimeWindow()
    {
        lock (Gate)
        {
            for (var slot = 0; slot < _sentAt.Length; slot++)
            {
                QueueRequest(slot);
            }

            FlushBatch();
        }
    }

    /// <summary>
    /// Must hold <see cref="Gate"/>. Gives up on every outstanding transaction (the connection that
    /// carried them is gone); they count as lost so a reconnecting server is not flattered.
    /// </summary>
    protected void AbandonOutstandingLocked()
    {
        var measuring = _run.Phase == RunPhase.Measure;
        for (var slot = 0; slot < _sentAt.Length; slot++)
        {
            if (_sentAt[slot] != 0)
            {
                _sentAt[slot] = 0;
                if (measuring)
                {
                    Lost++;
                }
            }
        }

        _batchLength = 0;
    }

    /// <summary>Must hold <see cref="Gate"/>. Matches one received message and queues its replacement.</summary>
    protected void HandleResponseLocked(ReadOnlySpan<byte> message, long now)
    {
        if (!StunWire.IsBindingSuccess(message))
        {
            Invalid++;
            return;
        }

        var transactionId = message.Slice(StunWire.TransactionIdOffset, StunWire.TransactionIdLength);
        var slot = BinaryPrimitives.ReadUInt16BigEndian(transactionId[(StunWire.TransactionIdLength - 2)..]);
        if (slot >= _sentAt.Length || _sentAt[slot] == 0
            || !transactionId.SequenceEqual(SlotTransactionId(slot)))
        {
            // A late answer to a transaction we already declared lost and replaced, or a duplicate.
            Stale++;
            return;
        }

        var phase = _run.Phase;
        if (phase == RunPhase.Measure)
        {
            Ok++;
            Histogram.Record((now - _sentAt[slot]) * 1_000_000 / Stopwatch.Frequency);
        }

        _sentAt[slot] = 0;
        if (phase != RunPhase.Drain)
        {
            QueueRequest(slot);
        }
    }

    /// <summary>Must hold <see cref="Gate"/>. Sends everything queued since the last flush.</summary>
    protected void FlushBatch()
    {
        if (_batchLength == 0)
        {
            return;
        }

        var length = _batchLength;
        _batchLength = 0;
        if (_closed)
        {
            return;
        }

        Transmit(_batch.AsSpan(0, length));
    }

    /// <summary>Must hold <see cref="Gate"/>. <paramref name="batch"/> is whole requests of <see cref="RequestLength"/>.</summary>
    protected abstract void Transmit(ReadOnlySpan<byte> batch);

    protected abstract void CloseTransport();

    private void QueueRequest(int slot)
    {
        // The slot index rides in the last two bytes of the otherwise random transaction id so a
        // response finds its slot in O(1) without hashing; the full id is still compared.
        var id = SlotTransactionId(slot);
        BinaryPrimitives.WriteUInt64LittleEndian(id, NextRandom());
        BinaryPrimitives.WriteUInt16LittleEndian(id[8..], (ushort)NextRandom());
        BinaryPrimitives.WriteUInt16BigEndian(id[10..], (ushort)slot);

        _batchLength += StunWire.WriteBindingRequest(_batch.AsSpan(_batchLength), id, _fingerprint);
        _sentAt[slot] = Stopwatch.GetTimestamp();
        if (_run.Phase == RunPhase.Measure)
        {
            Sent++;
        }
    }

    private Span<byte> SlotTransactionId(int slot) =>
        _transactionIds.AsSpan(slot * StunWire.TransactionIdLength, StunWire.TransactionIdLength);

    private ulong NextRandom() => LinuxNative.NextRandom(ref _rng);
}
