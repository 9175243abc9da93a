namespace Relay.DeviceClient.Internal;

/// <summary>A QoS 1 message sent and not yet acknowledged.</summary>
internal sealed class InflightMessage(ushort packetId, OutgoingMessage message, long order, TaskCompletionSource? done)
{
    public ushort PacketId { get; } = packetId;

    public OutgoingMessage Message { get; } = message;

    /// <summary>Send order: a resend after a reconnect keeps it (§4.6 message ordering).</summary>
    public long Order { get; } = order;

    /// <summary>Completed by the PUBACK when someone waits for it; null for fire-and-forget sends.</summary>
    public TaskCompletionSource? Done { get; } = done;
}

/// <summary>
/// The client's QoS 1 send window (§4.3.2, §4.4) and its packet identifiers: at most <c>capacity</c> messages
/// wait for a PUBACK at once, each under an identifier that is not reused until that PUBACK came (MQTT 5.0
/// [MQTT-2.2.1-3], 3.1.1 [MQTT-2.3.1-2]). A SUBSCRIBE borrows an identifier from the same space while its
/// SUBACK is awaited. The window outlives connections: what is in it is resent after a reconnect.
/// </summary>
internal sealed class InflightWindow(int capacity)
{
    private readonly object _gate = new();
    private readonly Dictionary<ushort, InflightMessage> _inflight = [];
    private readonly SemaphoreSlim _slots = new(capacity, capacity);
    private ushort _lastPacketId;
    private ushort _reserved;
    private long _order;

    /// <summary>Messages waiting for their PUBACK now.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _inflight.Count;
            }
        }
    }

    /// <summary>Waits for a free slot, then gives <paramref name="message"/> an unused packet identifier.</summary>
    public async ValueTask<InflightMessage> AddAsync(OutgoingMessage message, bool waitForAck, CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        lock (_gate)
        {
            var id = NextFreeIdLocked();
            var inflight = new InflightMessage(id, message, ++_order, waitForAck ? new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) : null);
            _inflight[id] = inflight;
            return inflight;
        }
    }

    /// <summary>A PUBACK for <paramref name="packetId"/>: the message leaves the window; null when none was in flight under that id.</summary>
    public InflightMessage? Acknowledge(ushort packetId)
    {
        InflightMessage? done;
        lock (_gate)
        {
            _inflight.Remove(packetId, out done);
        }

        if (done is not null)
        {
            _slots.Release();
        }

        return done;
    }

    /// <summary>
    /// After a reconnect: returns what must go again with DUP, in the order it was first sent (§4.4). Transient
    /// messages leave the window instead, and whoever waits for them is told: signalling from the last
    /// connection is stale, as the sessions it belonged to have timed out or will.
    /// </summary>
    public InflightMessage[] TakeResends()
    {
        InflightMessage[] pending;
        List<InflightMessage> stale = [];
        lock (_gate)
        {
            foreach (var inflight in _inflight.Values.Where(static i => i.Message.Transient).ToList())
            {
                _inflight.Remove(inflight.PacketId);
                stale.Add(inflight);
            }

            pending = [.. _inflight.Values.OrderBy(static i => i.Order)];
        }

        foreach (var inflight in stale)
        {
            _slots.Release();
            inflight.Done?.TrySetException(new IOException("The connection dropped before the PUBACK."));
        }

        return pending;
    }

    /// <summary>Everything still waiting for a PUBACK, for the journal at stop.</summary>
    public InflightMessage[] Snapshot()
    {
        lock (_gate)
        {
            return [.. _inflight.Values];
        }
    }

    /// <summary>An identifier for a SUBSCRIBE; no PUBLISH gets it until <see cref="ReleaseReserved"/>.</summary>
    public ushort Reserve()
    {
        lock (_gate)
        {
            _reserved = NextFreeIdLocked();
            return _reserved;
        }
    }

    /// <summary>The SUBSCRIBE's answer came, or will not: its identifier is free again.</summary>
    public void ReleaseReserved()
    {
        lock (_gate)
        {
            _reserved = 0;
        }
    }

    // Packet identifiers are non-zero ([MQTT-2.2.1-3]); they go round from 65,535 back to 1.
    private ushort NextFreeIdLocked()
    {
        while (true)
        {
            _lastPacketId = (ushort)(_lastPacketId == ushort.MaxValue ? 1 : _lastPacketId + 1);
            if (!_inflight.ContainsKey(_lastPacketId) && _lastPacketId != _reserved)
            {
                return _lastPacketId;
            }
        }
    }
}
