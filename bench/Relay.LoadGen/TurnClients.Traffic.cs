using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using static Relay.LoadGen.LinuxNative;
using static Relay.Server.Transport.Linux.LinuxUdp;

namespace Relay.LoadGen;

/// <summary>Outcome of one traffic pass (closed or open loop).</summary>
internal sealed class TrafficResult
{
    public long Sent;
    public long Ok;
    public long Lost;
    public long Stale;
    public long Invalid;
    public long Late;
    public long SendErrors;
    public double Seconds;

    public LatencyHistogram Histogram { get; } = new();

    /// <summary>
    /// Open loop: send call to the kernel's receive timestamp on the client socket (SO_TIMESTAMPNS),
    /// which leaves out how long the generator's own thread took to get round to reading it.
    /// </summary>
    public LatencyHistogram KernelHistogram { get; } = new();

    public double PerSecond => Seconds > 0 ? Ok / Seconds : 0;

    public double LossPercent => Sent == 0 ? 0 : 100.0 * Lost / Sent;
}

/// <summary>
/// Relayed traffic. Each active allocation's client socket sends ChannelData on its channel; the
/// server relays the payload to the allocation's echo peer, which sends it back to the relayed
/// address; the server wraps it in ChannelData to the client. In direct mode the same payloads go
/// from the same sockets straight to the echo peers and back: the kernel's own loopback path, the
/// baseline that the relay's added latency is measured against.
/// </summary>
/// <remarks>
/// Payload layout (little endian, the generator's own): epoch u32 (one per pass, so nothing from an
/// earlier pass is counted), allocation index u32, slot u16, measured flag u8, pad u8, then a
/// u64 that is a random tag (closed loop) or the send timestamp (open loop, Stopwatch ticks), and
/// in the open loop the send time again as CLOCK_REALTIME ns (to compare with the kernel's receive
/// timestamp); zeros after.
/// </remarks>
internal sealed unsafe partial class TurnClients
{
    public const int PayloadHeader = 28;

    private byte* _tx;
    private IoVec* _txIov;
    private IoVec* _txGather;
    private MMsgHdr* _txMessages;
    private int[] _pendingCount = [];
    private int[] _pendingSlot = [];
    private long[] _sentAt = [];
    private ulong[] _tags = [];
    private int _active;
    private int _window;
    private int _stride;
    private int _payloadLength;
    private int _messageOffset;
    private int _messageLength;
    private bool _direct;
    private bool _open;
    private bool _gsoOn;
    private uint _epoch;
    private RunPhase _phase;
    private TrafficResult _result = new();
    private long _lateTicks;

    /// <summary>
    /// Closed loop: <paramref name="window"/> round trips outstanding on each of the first
    /// <paramref name="active"/> allocations, every answer immediately replaced. A round trip
    /// unanswered after <paramref name="timeoutMs"/> counts as lost and is replaced; an answer after
    /// that counts as stale.
    /// </summary>
    public TrafficResult RunClosedLoop(int active, int window, int payload, bool direct, bool gso,
        double warmupSeconds, double seconds, int timeoutMs, CpuWindow? cpu)
    {
        PrepareTraffic(active, window, payload, direct, open: false, gso);
        var timeoutTicks = timeoutMs * Stopwatch.Frequency / 1000;
        var sweepTicks = Math.Max(1, timeoutMs / 4) * Stopwatch.Frequency / 1000;
        _phase = warmupSeconds > 0 ? RunPhase.Warmup : RunPhase.Measure;
        for (var s = 0; s < active; s++)
        {
            for (var slot = 0; slot < window; slot++)
            {
                QueueClosed(s, slot);
            }

            Flush(s);
        }

        var now = Stopwatch.GetTimestamp();
        var measureStart = now + (long)(warmupSeconds * Stopwatch.Frequency);
        var measureEnd = measureStart + (long)(seconds * Stopwatch.Frequency);
        var nextSweep = now + sweepTicks;
        if (_phase == RunPhase.Measure)
        {
            cpu?.Begin();
        }

        while (true)
        {
            PollTraffic(1);
            now = Stopwatch.GetTimestamp();
            if (_phase == RunPhase.Warmup && now >= measureStart)
            {
                cpu?.Begin();
                measureStart = now;
                measureEnd = now + (long)(seconds * Stopwatch.Frequency);
                _phase = RunPhase.Measure;
            }
            else if (_phase == RunPhase.Measure && now >= measureEnd)
            {
                cpu?.End();
                _result.Seconds = (now - measureStart) / (double)Stopwatch.Frequency;
                _phase = RunPhase.Drain;
                break;
            }

            if (now >= nextSweep)
            {
                nextSweep = now + sweepTicks;
                SweepClosed(now - timeoutTicks);
            }
        }

        // Let what is still in flight come back (not replaced, not counted) so the next pass starts clean.
        var drainEnd = Stopwatch.GetTimestamp() + (Stopwatch.Frequency / 2);
        while (Stopwatch.GetTimestamp() < drainEnd && Outstanding() > 0)
        {
            PollTraffic(1);
        }

        EndTraffic();
        return _result;
    }

    /// <summary>
    /// Open loop: <paramref name="rate"/> messages per second in total, spread round-robin over the
    /// first <paramref name="active"/> allocations and sent on schedule whether or not answers come
    /// back. Latency is from the send timestamp carried in the payload; after the measured window,
    /// answers are awaited for <paramref name="drainMs"/> and whatever did not come back is lost.
    /// </summary>
    public TrafficResult RunOpenLoop(int active, double rate, int payload, bool direct,
        double warmupSeconds, double seconds, int drainMs, int timeoutMs, CpuWindow? cpu)
    {
        const int Ring = 16;
        PrepareTraffic(active, Ring, payload, direct, open: true, gso: false);
        SetReceiveTimestamps(active, on: true);
        _lateTicks = timeoutMs * Stopwatch.Frequency / 1000;
        var nextSlot = new int[active];
        var touched = new int[active];
        var start = Stopwatch.GetTimestamp();
        var measureStart = start + (long)(warmupSeconds * Stopwatch.Frequency);
        var measureEnd = measureStart + (long)(seconds * Stopwatch.Frequency);
        _phase = warmupSeconds > 0 ? RunPhase.Warmup : RunPhase.Measure;
        if (_phase == RunPhase.Measure)
        {
            cpu?.Begin();
        }

        long scheduled = 0;
        var next = 0;
        while (true)
        {
            var now = Stopwatch.GetTimestamp();
            if (_phase == RunPhase.Warmup && now >= measureStart)
            {
                cpu?.Begin();
                _phase = RunPhase.Measure;
            }
            else if (_phase == RunPhase.Measure && now >= measureEnd)
            {
                cpu?.End();
                _result.Seconds = (now - measureStart) / (double)Stopwatch.Frequency;
                _phase = RunPhase.Drain;
                break;
            }

            // Everything due by now leaves now (bounded per pass so receiving keeps up after a stall).
            var due = Math.Min(4096, (long)((now - start) * rate / Stopwatch.Frequency) - scheduled);
            var touchedCount = 0;
            for (var k = 0; k < due; k++)
            {
                var s = next;
                next = next + 1 == active ? 0 : next + 1;
                if (_pendingCount[s] == 0)
                {
                    touched[touchedCount++] = s;
                }
                else if (_pendingCount[s] == Ring)
                {
                    // Already in this pass's list (anything pending was queued in this pass).
                    Flush(s);
                }

                var slot = nextSlot[s];
                nextSlot[s] = slot + 1 == Ring ? 0 : slot + 1;
                Queue(s, slot);
            }

            scheduled += Math.Max(0, due);
            for (var t = 0; t < touchedCount; t++)
            {
                Flush(touched[t]);
            }

            // Sleep until the next message is due (or an answer arrives), so messages leave one by one
            // on schedule rather than in millisecond bursts that would queue behind each other.
            var nextDue = start + (long)((scheduled + 1) * Stopwatch.Frequency / rate);
            var waitNs = Math.Clamp((nextDue - Stopwatch.GetTimestamp()) * 1_000_000_000 / Stopwatch.Frequency, 0, 1_000_000);
            HandleReady(WaitNs(waitNs));
        }

        var drainEnd = Stopwatch.GetTimestamp() + (drainMs * Stopwatch.Frequency / 1000);
        while (Stopwatch.GetTimestamp() < drainEnd && _result.Ok < _result.Sent)
        {
            PollTraffic(1);
        }

        _result.Lost = Math.Max(0, _result.Sent - _result.Ok);
        SetReceiveTimestamps(active, on: false);
        EndTraffic();
        return _result;
    }

    private void PrepareTraffic(int active, int window, int payload, bool direct, bool open, bool gso)
    {
        FreeTraffic();
        _result = new TrafficResult();
        _epoch++;
        _active = active;
        _window = window;
        _direct = direct;
        _open = open;
        _payloadLength = payload;
        _messageOffset = direct ? TurnWire.ChannelHeaderLength : 0;
        _messageLength = direct ? payload : TurnWire.ChannelHeaderLength + payload;
        _stride = (TurnWire.ChannelHeaderLength + payload + 15) & ~15;
        var slots = active * window;
        _pendingCount = new int[active];
        _pendingSlot = new int[slots];
        _sentAt = new long[slots];
        _tags = new ulong[slots];
        var size = (nuint)slots * (nuint)(_stride + (2 * sizeof(IoVec)) + sizeof(MMsgHdr));
        _tx = (byte*)NativeMemory.AlignedAlloc(size, 64);
        NativeMemory.Clear(_tx, size);
        _txMessages = (MMsgHdr*)_tx;
        _txIov = (IoVec*)(_txMessages + slots);
        _txGather = _txIov + slots;
        var buffers = (byte*)(_txGather + slots);
        for (var s = 0; s < active; s++)
        {
            for (var slot = 0; slot < window; slot++)
            {
                var index = (s * window) + slot;
                var message = buffers + ((nuint)index * (nuint)_stride);
                // RFC 8656 §12.4: channel number, then the length of the application data.
                BinaryPrimitives.WriteUInt16BigEndian(new Span<byte>(message, 2), BoundChannel);
                BinaryPrimitives.WriteUInt16BigEndian(new Span<byte>(message + 2, 2), (ushort)payload);
                var body = new Span<byte>(message + TurnWire.ChannelHeaderLength, payload);
                BinaryPrimitives.WriteUInt32LittleEndian(body, _epoch);
                BinaryPrimitives.WriteUInt32LittleEndian(body[4..], (uint)s);
                BinaryPrimitives.WriteUInt16LittleEndian(body[8..], (ushort)slot);
                _txIov[index].Base = message + _messageOffset;
                _txIov[index].Length = (nuint)_messageLength;
                ref var header = ref _txMessages[index].Header;
                header.Iov = &_txGather[index];
                header.IovLength = 1;
                header.Name = direct ? _peerNames + ((s % _peers.Length) * NameStride) : _targetName;
                header.NameLength = (uint)(direct ? _peerNameLength : _targetNameLength);
            }
        }

        _gsoOn = gso && SetGso(_messageLength);
    }

    private void EndTraffic()
    {
        if (_gsoOn)
        {
            SetGso(0);
            _gsoOn = false;
        }
    }

    private void FreeTraffic()
    {
        if (_tx != null)
        {
            NativeMemory.AlignedFree(_tx);
            _tx = null;
        }
    }

    /// <summary>
    /// UDP_SEGMENT on the active sockets: one sendmmsg entry carries a run of equal-sized messages that
    /// the kernel splits into ordinary datagrams before the server sees them (see BatchedUdpWorker).
    /// Size 0 turns it off again, so setup messages of other sizes are never split.
    /// </summary>
    private bool SetGso(int size)
    {
        Span<byte> value = stackalloc byte[sizeof(int)];
        BinaryPrimitives.WriteInt32LittleEndian(value, size);
        try
        {
            for (var s = 0; s < _active; s++)
            {
                _sockets[s].SetRawSocketOption(SolUdp, UdpSegment, value);
            }

            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private int Outstanding()
    {
        var count = 0;
        foreach (var sentAt in _sentAt)
        {
            count += sentAt != 0 ? 1 : 0;
        }

        return count;
    }

    private void PollTraffic(int timeoutMs) => HandleReady(Wait(timeoutMs));

    private void HandleReady(int ready)
    {
        var now = Stopwatch.GetTimestamp();
        for (var e = 0; e < ready; e++)
        {
            var s = ReadyIndex(e);
            var received = ReceiveBatchFrom(s);
            for (var k = 0; k < received; k++)
            {
                HandleTraffic(s, k, now);
            }

            if (!_open && s < _active)
            {
                Flush(s);
            }
        }
    }

    private void HandleTraffic(int s, int k, long now)
    {
        var datagram = Received(k);
        ReadOnlySpan<byte> payload;
        if (_direct)
        {
            payload = datagram;
        }
        else
        {
            if (!FromTarget(k) || datagram.Length < TurnWire.ChannelHeaderLength
                || BinaryPrimitives.ReadUInt16BigEndian(datagram) != BoundChannel)
            {
                _result.Invalid++;
                return;
            }

            // Over UDP the server may pad ChannelData to 4 bytes (RFC 8656 §12.5 allows it).
            var length = BinaryPrimitives.ReadUInt16BigEndian(datagram[2..]);
            payload = length <= datagram.Length - TurnWire.ChannelHeaderLength ? datagram.Slice(TurnWire.ChannelHeaderLength, length) : default;
        }

        if (payload.Length != _payloadLength || s >= _active)
        {
            _result.Invalid++;
            return;
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(payload) != _epoch)
        {
            _result.Stale++;
            return;
        }

        var slot = BinaryPrimitives.ReadUInt16LittleEndian(payload[8..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(payload[4..]) != (uint)s || slot >= _window)
        {
            _result.Invalid++;
            return;
        }

        var tag = BinaryPrimitives.ReadUInt64LittleEndian(payload[12..]);
        if (_open)
        {
            if (payload[10] == 1)
            {
                _result.Ok++;
                var ticks = now - (long)tag;
                _result.Histogram.Record(ticks * 1_000_000 / Stopwatch.Frequency);
                if (ticks > _lateTicks)
                {
                    _result.Late++;
                }

                var receivedAt = ReceivedAtNs(k);
                if (receivedAt != 0)
                {
                    _result.KernelHistogram.Record((receivedAt - BinaryPrimitives.ReadInt64LittleEndian(payload[20..])) / 1000);
                }
            }

            return;
        }

        var index = (s * _window) + slot;
        if (_sentAt[index] == 0 || _tags[index] != tag)
        {
            // An answer to a round trip already declared lost and replaced, or a duplicate.
            _result.Stale++;
            return;
        }

        if (_phase == RunPhase.Measure)
        {
            _result.Ok++;
            _result.Histogram.Record((now - _sentAt[index]) * 1_000_000 / Stopwatch.Frequency);
        }

        _sentAt[index] = 0;
        if (_phase != RunPhase.Drain)
        {
            QueueClosed(s, slot);
        }
    }

    private void SweepClosed(long deadline)
    {
        for (var s = 0; s < _active; s++)
        {
            for (var slot = 0; slot < _window; slot++)
            {
                var index = (s * _window) + slot;
                var sentAt = _sentAt[index];
                if (sentAt == 0 || sentAt > deadline)
                {
                    continue;
                }

                _sentAt[index] = 0;
                if (_phase == RunPhase.Measure)
                {
                    _result.Lost++;
                }

                if (_phase != RunPhase.Drain)
                {
                    QueueClosed(s, slot);
                }
            }

            Flush(s);
        }
    }

    private void QueueClosed(int s, int slot)
    {
        var index = (s * _window) + slot;
        var tag = NextRandom();
        _tags[index] = tag;
        BinaryPrimitives.WriteUInt64LittleEndian(Payload(index)[12..], tag);
        Queue(s, slot);
    }

    private void Queue(int s, int slot)
    {
        var basis = s * _window;
        var pending = _pendingCount[s]++;
        _pendingSlot[basis + pending] = slot;
        _txGather[basis + pending] = _txIov[basis + slot];
    }

    private Span<byte> Payload(int index) =>
        new((byte*)_txIov[index].Base - _messageOffset + TurnWire.ChannelHeaderLength, _payloadLength);

    /// <summary>Stamps and sends everything queued on socket <paramref name="s"/> with as few sendmmsg calls as the kernel allows.</summary>
    private void Flush(int s)
    {
        var count = _pendingCount[s];
        if (count == 0)
        {
            return;
        }

        _pendingCount[s] = 0;
        var basis = s * _window;
        var stamp = Stopwatch.GetTimestamp();
        var realtime = _open ? RealtimeNs() : 0;
        var measured = _phase == RunPhase.Measure;
        for (var k = 0; k < count; k++)
        {
            var index = basis + _pendingSlot[basis + k];
            if (_open)
            {
                var payload = Payload(index);
                payload[10] = measured ? (byte)1 : (byte)0;
                BinaryPrimitives.WriteUInt64LittleEndian(payload[12..], (ulong)stamp);
                BinaryPrimitives.WriteInt64LittleEndian(payload[20..], realtime);
            }
            else
            {
                _sentAt[index] = stamp;
            }
        }

        if (measured)
        {
            _result.Sent += count;
        }

        // The closed loop's round trips stay outstanding and time out; the open loop's count as lost.
        _result.SendErrors += SendGathered(_fds[s], _txMessages + basis, _txGather + basis, count, _gsoOn);
    }
}
