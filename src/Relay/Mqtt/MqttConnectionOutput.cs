using System.IO.Pipelines;

namespace Relay.Server.Mqtt;

/// <summary>
/// One MQTT connection's way out: the transport's <see cref="PipeWriter"/>, the lock packets are written under
/// (other sessions' publishes arrive on their own threads), the one flush loop that pushes them out, and the
/// count of output the client has left unread. While a flush is blocked by a slow reader the output is
/// congested: the connection drops QoS 0 to it, and QoS 1/2 waits in the session behind the Receive Maximum.
/// What the client itself makes us answer (PUBACK, PINGRESP, SUBACK...) cannot be dropped, so unread output is
/// capped by Relay:Mqtt:MaxPendingOutputBytes (review H3): past it the connection is told to end, once.
/// </summary>
/// <remarks>
/// Accounting: every byte flushed is added to a running total; a flush that completes proves the transport took
/// what was flushed before it was issued (it is back under its own small threshold), so unread output is at most
/// the total flushed minus the last drained mark, plus what is written and not flushed, plus the transport's
/// threshold (64 KiB).
/// </remarks>
internal sealed class MqttConnectionOutput
{
    private readonly PipeWriter _writer;
    private readonly MqttMetrics _metrics;
    private readonly long _maxPending;
    private readonly Action<long> _limitHit;

    private bool _completed;
    private bool _flushing;
    private bool _flushAgain;
    private bool _inBatch;
    private volatile bool _congested;
    private Task? _flushTask;
    private long _flushedTotal;
    private long _flushMark;
    private long _drainedMark;
    private long _reportedPending;
    private bool _limitReported;

    // Environment.TickCount64 (the clock of the connection deadlines) since which QoS 0 messages have been dropped for being over the limit; 0 while under.
    private long _overLimitSince;

    /// <param name="writer">The transport's output.</param>
    /// <param name="metrics">Where pending output is reported.</param>
    /// <param name="maxPending">Relay:Mqtt:MaxPendingOutputBytes.</param>
    /// <param name="limitHit">
    /// Called once, under <see cref="Gate"/>, with the pending bytes, when the client has left more than
    /// <paramref name="maxPending"/> unread and something must go: the connection counts, logs and ends itself
    /// (not under the lock: ending cancels the read loop, whose continuation may run inline).
    /// </param>
    public MqttConnectionOutput(PipeWriter writer, MqttMetrics metrics, long maxPending, Action<long> limitHit)
    {
        _writer = writer;
        _metrics = metrics;
        _maxPending = maxPending;
        _limitHit = limitHit;
    }

    /// <summary>The lock every write and the flush bookkeeping take.</summary>
    public Lock Gate { get; } = new();

    /// <summary>Where packets are written; only under <see cref="Gate"/>, followed by <see cref="AfterWriteLocked"/>.</summary>
    public PipeWriter Writer => _writer;

    /// <summary>True while a flush waits for a slow reader (read without the lock: a hint for dropping QoS 0).</summary>
    public bool Congested => _congested;

    /// <summary>Under <see cref="Gate"/>: the output is closed; nothing more may be written.</summary>
    public bool CompletedLocked => _completed;

    /// <summary>True once the output is closed (the connection is ending).</summary>
    public bool IsCompleted
    {
        get
        {
            lock (Gate)
            {
                return _completed;
            }
        }
    }

    /// <summary>Unread output: flushed since the last completed flush was issued, plus written and not flushed.</summary>
    public long PendingLocked => _flushedTotal - _drainedMark + _writer.UnflushedBytes;

    /// <summary>The read loop writes its answers to one batch of packets and flushes once, at <see cref="EndBatch"/>.</summary>
    public void BeginBatch()
    {
        lock (Gate)
        {
            _inBatch = true;
        }
    }

    public void EndBatch()
    {
        lock (Gate)
        {
            _inBatch = false;
            if (_flushAgain || _writer.UnflushedBytes > 0)
            {
                StartFlushLocked();
            }
        }
    }

    /// <summary>After a write: the read loop flushes once per batch; writes from other threads flush at once.</summary>
    public void AfterWriteLocked()
    {
        if (!_inBatch)
        {
            StartFlushLocked();
        }
        else
        {
            _flushAgain = true;
        }
    }

    /// <summary>
    /// True when a packet that must be sent may be written; false (and the connection told to end) when the client
    /// has left more than the limit unread.
    /// </summary>
    public bool HasRoomLocked()
    {
        if (PendingLocked <= _maxPending)
        {
            return true;
        }

        LimitLocked();
        return false;
    }

    /// <summary>
    /// For a PUBLISH: whether it may be written. Over the limit a QoS 0 message is dropped (false, the connection
    /// stays while it catches up within the grace), a QoS 1/2 one ends the connection (false; it stays with the
    /// session).
    /// </summary>
    public bool MayPublishLocked(byte qos, out bool dropped)
    {
        dropped = false;
        if (PendingLocked <= _maxPending)
        {
            return true;
        }

        if (qos == 0)
        {
            dropped = true;
            if (_overLimitSince == 0)
            {
                Volatile.Write(ref _overLimitSince, Math.Max(1, Environment.TickCount64));
            }

            return false;
        }

        LimitLocked();
        return false;
    }

    /// <summary>
    /// Called by the sweep at <paramref name="now"/> (<see cref="Environment.TickCount64"/>): ends the connection when
    /// its output has been over the limit for longer than <paramref name="graceMilliseconds"/>.
    /// </summary>
    public void EndIfOverLimitFor(long now, long graceMilliseconds)
    {
        var since = Volatile.Read(ref _overLimitSince);
        if (since != 0 && now - since > graceMilliseconds)
        {
            lock (Gate)
            {
                LimitLocked();
            }
        }
    }

    /// <summary>Closes the output and waits (bounded) for a flush in progress, so a final DISCONNECT reaches the socket before the pipe completes.</summary>
    public async ValueTask DrainAsync()
    {
        Task? pending;
        lock (Gate)
        {
            pending = _flushing ? _flushTask : null;
            _completed = true;
        }

        if (pending is not null)
        {
            await pending.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }

        lock (Gate)
        {
            // The transport now owns (or drops) what is left; it no longer counts against this server's total.
            _metrics.PendingOutput(-_reportedPending, 0);
            _reportedPending = 0;
            _drainedMark = _flushedTotal;
        }
    }

    private void LimitLocked()
    {
        if (_limitReported)
        {
            return;
        }

        _limitReported = true;
        _limitHit(PendingLocked);
    }

    private void StartFlushLocked()
    {
        if (_flushing)
        {
            _flushAgain = true;
            return;
        }

        _flushing = true;
        _flushAgain = false;
        var flush = FlushLocked();
        if (flush.IsCompletedSuccessfully)
        {
            _flushing = false;
            DrainedLocked(_flushMark);
            if (flush.Result.IsCompleted)
            {
                _completed = true;
            }

            return;
        }

        _congested = true;
        _flushTask = FinishFlushAsync(flush, _flushMark);
    }

    private ValueTask<FlushResult> FlushLocked()
    {
        _flushedTotal += _writer.UnflushedBytes;
        _flushMark = _flushedTotal;
        var flush = _writer.FlushAsync();
        ReportPendingLocked();
        return flush;
    }

    // A flush issued at mark completed: the transport has taken everything flushed before it.
    private void DrainedLocked(long mark)
    {
        _drainedMark = Math.Max(_drainedMark, mark);
        ReportPendingLocked();
        if (_overLimitSince != 0 && PendingLocked <= _maxPending)
        {
            Volatile.Write(ref _overLimitSince, 0);
        }
    }

    private void ReportPendingLocked()
    {
        var pending = _flushedTotal - _drainedMark;
        var delta = pending - _reportedPending;
        if (delta != 0)
        {
            _reportedPending = pending;
            _metrics.PendingOutput(delta, pending);
        }
    }

    private async Task FinishFlushAsync(ValueTask<FlushResult> pending, long mark)
    {
        while (true)
        {
            FlushResult result;
            try
            {
                result = await pending.ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException)
            {
                result = new FlushResult(isCanceled: false, isCompleted: true);
            }

            lock (Gate)
            {
                DrainedLocked(mark);
                if (result.IsCompleted || _completed)
                {
                    _completed = true;
                    _flushing = false;
                    _congested = false;
                    return;
                }

                if (!_flushAgain)
                {
                    _flushing = false;
                    _congested = false;
                    return;
                }

                _flushAgain = false;
                pending = FlushLocked();
                mark = _flushMark;
            }
        }
    }
}
