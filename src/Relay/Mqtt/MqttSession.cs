namespace Relay.Server.Mqtt;

/// <summary>An application message on its way to one session: the shared message plus what this subscriber gets.</summary>
internal sealed class MqttOutgoing(StoredMessage message, byte qos, bool retain, uint[]? subscriptionIdentifiers)
{
    public StoredMessage Message { get; } = message;

    /// <summary>min(published QoS, subscription's maximum) (§3.8.4).</summary>
    public byte QoS { get; } = qos;

    public bool Retain { get; } = retain;

    public uint[]? SubscriptionIdentifiers { get; } = subscriptionIdentifiers;

    /// <summary>Store sequence; 0 for a session that is not persistent.</summary>
    public long Sequence { get; set; }

    public ushort PacketId { get; set; }

    /// <summary>QoS 2: PUBREC received, PUBREL sent; what a resend repeats is PUBREL (§4.3.3).</summary>
    public bool Released { get; set; }

    /// <summary>Sent at least once on some connection: a resend carries DUP=1 [MQTT-4.4.0-1].</summary>
    public bool Sent { get; set; }

    /// <summary>Set by <see cref="MqttBroker.PublishToClient"/>: reported back on acknowledgement; such a message is never stored.</summary>
    public object? Tag { get; init; }
}

/// <summary>A will waiting for its delay (MQTT 5.0 §3.1.3.2, Will Delay Interval).</summary>
internal sealed record MqttPendingWill(StoredMessage Message, DateTimeOffset DueAt);

/// <summary>
/// The server side of an MQTT session (§4.1): subscriptions, messages queued and in flight, and the QoS 2
/// packet ids received but not yet released. It outlives connections when the session is persistent.
/// Every field is guarded by <see cref="Sync"/>; a connection's writer lock nests inside it, never around it.
/// Collections are created on first use, so an idle session with no traffic holds only this object.
/// </summary>
internal sealed class MqttSession(string clientId)
{
    public Lock Sync { get; } = new();

    public string ClientId { get; } = clientId;

    /// <summary>
    /// <see cref="MqttIdentity.Owner"/> of the principal that created the session; only a connection of the
    /// same owner may resume or take it over. Null only for a session restored from before owners were
    /// stored: the next principal to attach claims it. Written under the broker's sessions lock.
    /// </summary>
    public string? Owner { get; set; }

    /// <summary>Seconds the session outlives its connection; 0 = ends with it.</summary>
    public uint ExpirySeconds { get; set; }

    public bool Persistent => ExpirySeconds > 0;

    public DateTimeOffset? DisconnectedAt { get; set; }

    /// <summary>The live connection, or null while offline.</summary>
    public MqttConnection? Connection { get; set; }

    public bool IsOnline => Connection is not null;

    /// <summary>Set once the session was ended (expired or replaced by a clean start): late deliveries must not resurrect it.</summary>
    public bool Ended { get; set; }

    public Dictionary<string, MqttSubscription>? Subscriptions { get; set; }

    public Queue<MqttOutgoing>? Queue { get; set; }

    public List<MqttOutgoing>? Inflight { get; set; }

    /// <summary>Inbound QoS 2 packet ids between PUBREC and PUBREL: "deliver once" [MQTT-4.3.3-10..12].</summary>
    public HashSet<ushort>? InboundQoS2 { get; set; }

    public MqttPendingWill? PendingWill { get; set; }

    /// <summary>The current queue overflow has been logged; cleared when the queue moves again.</summary>
    public bool QueueFullLogged { get; set; }

    private ushort _nextPacketId;

    public int InflightCount => Inflight?.Count ?? 0;

    public int QueuedCount => Queue?.Count ?? 0;

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

    public MqttOutgoing? FindInflight(ushort packetId)
    {
        if (Inflight is null)
        {
            return null;
        }

        foreach (var message in Inflight)
        {
            if (message.PacketId == packetId)
            {
                return message;
            }
        }

        return null;
    }
}
