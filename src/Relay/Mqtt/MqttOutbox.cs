namespace Relay.Server.Mqtt;

/// <summary>
/// The QoS 1/2 messages on their way to one session's client (MQTT 5.0 §4.3, §4.9): in flight (sent, waiting
/// for their acknowledgement, each under its packet id) and queued behind the send window, in the order they
/// must go. Not thread-safe: the session's lock guards it, and the session decides when a message moves.
/// Created with the session's first such message, so a session that never had one holds none.
/// </summary>
internal sealed class MqttOutbox
{
    private readonly List<MqttOutgoing> _inflight = [];
    private Queue<MqttOutgoing>? _queue;
    private ushort _nextPacketId;

    public int InflightCount => _inflight.Count;

    public int QueuedCount => _queue?.Count ?? 0;

    /// <summary>The current queue overflow has been logged; cleared when the queue moves again.</summary>
    public bool OverflowLogged { get; set; }

    /// <summary>The messages in flight, oldest first; a copy, so a resend may remove from the outbox as it goes.</summary>
    public MqttOutgoing[] SnapshotInflight() => [.. _inflight];

    public void AddInflight(MqttOutgoing outgoing) => _inflight.Add(outgoing);

    public void RemoveInflight(MqttOutgoing outgoing) => _inflight.Remove(outgoing);

    public MqttOutgoing? FindInflight(ushort packetId)
    {
        foreach (var message in _inflight)
        {
            if (message.PacketId == packetId)
            {
                return message;
            }
        }

        return null;
    }

    /// <summary>A packet id not used by any message in flight (§2.2.1: non-zero, unique while in use).</summary>
    public ushort NextPacketId()
    {
        while (true)
        {
            _nextPacketId = (ushort)(_nextPacketId == ushort.MaxValue ? 1 : _nextPacketId + 1);
            if (FindInflight(_nextPacketId) is null)
            {
                return _nextPacketId;
            }
        }
    }

    public void Enqueue(MqttOutgoing outgoing) => (_queue ??= new()).Enqueue(outgoing);

    public MqttOutgoing Dequeue() => _queue!.Dequeue();

    /// <summary>Removes the server-published (tagged) messages: they leave with the connection, and their publisher redelivers them.</summary>
    public void DropTagged()
    {
        _inflight.RemoveAll(static o => o.Tag is not null);
        if (_queue is { Count: > 0 } queue && queue.Any(static o => o.Tag is not null))
        {
            _queue = new(queue.Where(static o => o.Tag is null));
        }
    }
}
