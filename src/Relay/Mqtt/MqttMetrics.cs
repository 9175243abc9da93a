using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Mqtt;

/// <summary>How an MQTT connection reached us.</summary>
internal enum MqttTransport : byte
{
    Tcp,
    Tls,
    WebSocket,
}

/// <summary>Why a message was not delivered to one subscriber (or not accepted at all).</summary>
internal enum MqttDropReason : byte
{
    QueueFull,
    Expired,
    TooLargeForClient,
    NotAuthorized,
    DollarTopic,
    ClientBackpressure,
    OfflineQoS0,
    RetainedLimit,
}

/// <summary>A configured limit that refused something.</summary>
internal enum MqttLimit : byte
{
    ConnectionsPerIp,
    ConnectTimeout,
    PacketSize,
    Inflight,
    QueuedMessages,
    SubscriptionsPerSession,
    RetainedMessages,
    KeepAlive,

    /// <summary>accept() failed, typically out of file descriptors.</summary>
    Accept,

    /// <summary>A topic name or filter with more levels than Relay:Mqtt:MaxTopicLevels.</summary>
    TopicLevels,

    /// <summary>A topic name or filter longer than Relay:Mqtt:MaxTopicLength.</summary>
    TopicLength,

    /// <summary>A CONNECT for a client id whose session another principal owns, or that is a device's id.</summary>
    SessionOwner,

    /// <summary>A client left more than Relay:Mqtt:MaxPendingOutputBytes unread and was disconnected.</summary>
    PendingOutput,

    /// <summary>A packet before CONNECT declared more than Relay:Mqtt:MaxPreConnectPacketBytes.</summary>
    PreConnectPacketSize,

    /// <summary>A retained payload over Relay:Mqtt:MaxRetainedPayloadBytes.</summary>
    RetainedPayloadSize,

    /// <summary>A client id over Relay:Mqtt:MaxRetainedMessagesPerClient or MaxRetainedBytesPerClient.</summary>
    RetainedPerClient,

    /// <summary>All retained messages together over Relay:Mqtt:MaxRetainedBytes.</summary>
    RetainedBytes,
}

/// <summary>Why an MQTT connection ended; one value per connection, fed to logs and metrics.</summary>
internal enum MqttEndReason : byte
{
    PeerClosed,
    ClientDisconnect,
    ProtocolError,
    MalformedPacket,
    KeepAliveTimeout,
    ConnectTimeout,
    AuthFailed,
    TakenOver,
    LimitExceeded,
    Shutdown,

    /// <summary>An operator deleted the device or replaced its secret.</summary>
    Administrative,

    /// <summary>A 3.1.1 PUBLISH the server could not keep (a command result whose commit failed): closed unacknowledged so the client resends it.</summary>
    NotStored,
}

/// <summary>
/// Meter <c>Relay.Mqtt</c>: connections, sessions, messages, drops, limits and CONNECT authentication outcomes
/// (counted here, where every CONNECT passes whatever the authenticator). Like TurnMetrics, the hot path
/// increments slots in fixed arrays and the observable instruments read them, so counting costs nothing per packet.
/// </summary>
internal sealed class MqttMetrics
{
    public const string MeterName = "Relay.Mqtt";

    private static readonly string[] TransportNames = ["tcp", "tls", "websocket"];
    private static readonly string[] DropNames = ["queue_full", "expired", "too_large_for_client", "not_authorized", "dollar_topic", "client_backpressure", "offline_qos0", "retained_limit"];
    private static readonly string[] LimitNames = ["connections_per_ip", "connect_timeout", "packet_size", "inflight", "queued_messages", "subscriptions_per_session", "retained_messages", "keep_alive", "accept", "topic_levels", "topic_length", "session_owner", "pending_output", "pre_connect_packet_size", "retained_payload_size", "retained_per_client", "retained_bytes"];
    private static readonly string[] EndNames = ["peer_closed", "client_disconnect", "protocol_error", "malformed_packet", "keep_alive_timeout", "connect_timeout", "auth_failed", "taken_over", "limit_exceeded", "shutdown", "administrative", "not_stored"];
    // Indexed by MqttAuthOutcome.
    private static readonly string[] AuthNames = ["allow", "bad_credentials", "not_authorized", "rate_limited", "unavailable", "busy"];
    private static readonly string[] QosNames = ["0", "1", "2"];

    private readonly long[] _connectionsCurrent = new long[TransportNames.Length];
    private readonly long[] _connectionsTotal = new long[TransportNames.Length];
    private readonly long[] _drops = new long[DropNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _ends = new long[EndNames.Length];
    private readonly long[] _auth = new long[AuthNames.Length];
    private readonly long[] _messagesIn = new long[3];
    private readonly long[] _messagesOut = new long[3];
    private long _bytesIn;
    private long _bytesOut;
    private long _sessions;
    private long _persistentSessions;
    private long _clientsConnected;
    private long _subscriptions;
    private long _retained;
    private long _pendingOutput;
    private long _pendingOutputPeak;

    public MqttMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableUpDownCounter("relay.mqtt.connections", () => Labelled(_connectionsCurrent, TransportNames, "transport"), "{connection}", "Open MQTT connections, by transport.");

        // ".total" rather than ".accepted": its Prometheus family stays relay_mqtt_connections_total beside the gauge above.
        meter.CreateObservableCounter("relay.mqtt.connections.total", () => Labelled(_connectionsTotal, TransportNames, "transport"), "{connection}", "MQTT connections accepted, by transport.");
        meter.CreateObservableCounter("relay.mqtt.connection_ends", () => Labelled(_ends, EndNames, "reason"), "{connection}", "MQTT connections ended, by reason.");
        meter.CreateObservableUpDownCounter("relay.mqtt.clients_connected", () => ClientsConnected, "{client}", "Clients past CONNACK.");
        meter.CreateObservableUpDownCounter("relay.mqtt.sessions", () => Labelled("kind", ("all", SessionsCurrent), ("persistent", PersistentSessions)), "{session}", "Sessions (online and offline), by kind.");
        meter.CreateObservableUpDownCounter("relay.mqtt.subscriptions", () => SubscriptionCount, "{subscription}", "Subscriptions across all sessions.");
        meter.CreateObservableGauge("relay.mqtt.retained_messages", () => RetainedCount, "{message}", "Retained messages.");
        meter.CreateObservableCounter("relay.mqtt.messages_received", () => Labelled(_messagesIn, QosNames, "qos"), "{message}", "PUBLISH packets received from clients, by QoS.");
        meter.CreateObservableCounter("relay.mqtt.messages_sent", () => Labelled(_messagesOut, QosNames, "qos"), "{message}", "PUBLISH packets sent to clients, by QoS.");
        meter.CreateObservableCounter("relay.mqtt.bytes", () => Labelled("direction", ("in", BytesIn), ("out", BytesOut)), "By", "Application payload bytes, by direction.");
        meter.CreateObservableCounter("relay.mqtt.drops", () => Labelled(_drops, DropNames, "reason"), "{message}", "Messages dropped, by reason.");
        meter.CreateObservableCounter("relay.mqtt.auth", () => Labelled(_auth, AuthNames, "outcome"), "{connect}", "MQTT CONNECT authentications, by outcome (rate_limited: refused without checking).");
        meter.CreateObservableUpDownCounter("relay.mqtt.pending_output", () => PendingOutputBytes, "By", "Output written to MQTT connections and not yet taken by their peers (an upper bound; Relay:Mqtt:MaxPendingOutputBytes caps each).");
        meter.CreateObservableGauge("relay.mqtt.pending_output.peak", () => PendingOutputPeak, "By", "The most output one MQTT connection has had pending since start.");
        meter.CreateObservableCounter("relay.mqtt.limit_hits", () => Labelled(_limits, LimitNames, "limit"), "{refusal}", "Things refused by a configured limit.");
    }

    public void Connection(MqttTransport transport, int delta)
    {
        Interlocked.Add(ref _connectionsCurrent[(int)transport], delta);
        if (delta > 0)
        {
            Interlocked.Increment(ref _connectionsTotal[(int)transport]);
        }
    }

    public void ClientConnected(int delta) => Interlocked.Add(ref _clientsConnected, delta);

    public void Session(int delta, bool persistent)
    {
        Interlocked.Add(ref _sessions, delta);
        if (persistent)
        {
            Interlocked.Add(ref _persistentSessions, delta);
        }
    }

    public void PersistenceChanged(bool persistent) => Interlocked.Add(ref _persistentSessions, persistent ? 1 : -1);

    public void Subscriptions(int delta) => Interlocked.Add(ref _subscriptions, delta);

    public void SetRetained(long count) => Volatile.Write(ref _retained, count);

    public void MessageIn(int qos, int bytes)
    {
        Interlocked.Increment(ref _messagesIn[qos]);
        Interlocked.Add(ref _bytesIn, bytes);
    }

    public void MessageOut(int qos, int bytes)
    {
        Interlocked.Increment(ref _messagesOut[qos]);
        Interlocked.Add(ref _bytesOut, bytes);
    }

    /// <summary>A connection's pending output changed by <paramref name="delta"/> and is now <paramref name="connectionPending"/>.</summary>
    public void PendingOutput(long delta, long connectionPending)
    {
        Interlocked.Add(ref _pendingOutput, delta);
        var peak = Volatile.Read(ref _pendingOutputPeak);
        while (connectionPending > peak)
        {
            var seen = Interlocked.CompareExchange(ref _pendingOutputPeak, connectionPending, peak);
            if (seen == peak)
            {
                break;
            }

            peak = seen;
        }
    }

    public long PendingOutputBytes => Volatile.Read(ref _pendingOutput);

    public long PendingOutputPeak => Volatile.Read(ref _pendingOutputPeak);

    public void Drop(MqttDropReason reason) => Interlocked.Increment(ref _drops[(int)reason]);

    public void LimitHit(MqttLimit limit) => Interlocked.Increment(ref _limits[(int)limit]);

    public void Ended(MqttEndReason reason) => Interlocked.Increment(ref _ends[(int)reason]);

    public void Auth(MqttAuthOutcome outcome) => Interlocked.Increment(ref _auth[(int)outcome]);

    public long Connections(MqttTransport transport) => Volatile.Read(ref _connectionsCurrent[(int)transport]);

    public long ConnectionsTotal(MqttTransport transport) => Volatile.Read(ref _connectionsTotal[(int)transport]);

    public long ClientsConnected => Volatile.Read(ref _clientsConnected);

    public long SessionsCurrent => Volatile.Read(ref _sessions);

    public long PersistentSessions => Volatile.Read(ref _persistentSessions);

    public long SubscriptionCount => Volatile.Read(ref _subscriptions);

    public long RetainedCount => Volatile.Read(ref _retained);

    public long MessagesIn(int qos) => Volatile.Read(ref _messagesIn[qos]);

    public long MessagesOut(int qos) => Volatile.Read(ref _messagesOut[qos]);

    public long MessagesInTotal => MessagesIn(0) + MessagesIn(1) + MessagesIn(2);

    public long MessagesOutTotal => MessagesOut(0) + MessagesOut(1) + MessagesOut(2);

    public long BytesIn => Volatile.Read(ref _bytesIn);

    public long BytesOut => Volatile.Read(ref _bytesOut);

    public long Drops(MqttDropReason reason) => Volatile.Read(ref _drops[(int)reason]);

    public long LimitHits(MqttLimit limit) => Volatile.Read(ref _limits[(int)limit]);

    public long Ends(MqttEndReason reason) => Volatile.Read(ref _ends[(int)reason]);

    public long AuthOutcomes(MqttAuthOutcome outcome) => Volatile.Read(ref _auth[(int)outcome]);
}
