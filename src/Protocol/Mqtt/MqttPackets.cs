using System.Buffers;

namespace Relay.Protocol.Mqtt;

// Decoded packets: readonly views of the received bytes, valid until the caller's AdvanceTo. Every
// UTF-8 string field has been checked to be well-formed without U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).

/// <summary>A decoded CONNECT (§3.1).</summary>
public readonly struct MqttConnect
{
    /// <summary>Protocol level; <see cref="MqttProtocolVersion.V310"/> for "MQIsdp".</summary>
    public MqttProtocolVersion Version { get; internal init; }

    /// <summary>Clean Start (v5) / Clean Session (v3.1.1), §3.1.2.4.</summary>
    public bool CleanStart { get; internal init; }

    /// <summary>Keep Alive, seconds; 0 = off (§3.1.2.10).</summary>
    public ushort KeepAliveSeconds { get; internal init; }

    /// <summary>Client Identifier, UTF-8; may be empty (§3.1.3.1).</summary>
    public ReadOnlySequence<byte> ClientId { get; internal init; }

    /// <summary>True when the User Name flag is set.</summary>
    public bool HasUsername { get; internal init; }

    /// <summary>User Name, UTF-8 (§3.1.3.5).</summary>
    public ReadOnlySequence<byte> Username { get; internal init; }

    /// <summary>True when the Password flag is set.</summary>
    public bool HasPassword { get; internal init; }

    /// <summary>Password, binary (§3.1.3.6).</summary>
    public ReadOnlySequence<byte> Password { get; internal init; }

    /// <summary>True when the Will flag is set (§3.1.2.5).</summary>
    public bool HasWill { get; internal init; }

    /// <summary>Will QoS, 0-2; 0 without a will (§3.1.2.6).</summary>
    public byte WillQoS { get; internal init; }

    /// <summary>Will Retain; false without a will (§3.1.2.7).</summary>
    public bool WillRetain { get; internal init; }

    /// <summary>Will Topic, UTF-8 (§3.1.3.3).</summary>
    public ReadOnlySequence<byte> WillTopic { get; internal init; }

    /// <summary>Will Payload, binary (§3.1.3.4).</summary>
    public ReadOnlySequence<byte> WillPayload { get; internal init; }

    /// <summary>CONNECT properties (§3.1.2.11); empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }

    /// <summary>Will properties (§3.1.3.2); empty in v3.1.1 or without a will.</summary>
    public MqttProperties WillProperties { get; internal init; }
}

/// <summary>A decoded CONNACK (§3.2); client side.</summary>
public readonly struct MqttConnAck
{
    /// <summary>Session Present (§3.2.2.1.1).</summary>
    public bool SessionPresent { get; internal init; }

    /// <summary>v5 reason code (<see cref="MqttReasonCode"/>) or v3.1.1 return code (<see cref="MqttConnectReturnCode"/>).</summary>
    public byte ReasonCode { get; internal init; }

    /// <summary>CONNACK properties (§3.2.2.3); empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }
}

/// <summary>A decoded PUBLISH (§3.3).</summary>
public readonly struct MqttPublish
{
    /// <summary>QoS 0-2 (§3.3.1.2).</summary>
    public byte QoS { get; internal init; }

    /// <summary>RETAIN (§3.3.1.3).</summary>
    public bool Retain { get; internal init; }

    /// <summary>DUP (§3.3.1.1).</summary>
    public bool Dup { get; internal init; }

    /// <summary>Topic Name, UTF-8, no wildcards; empty only in v5 with a Topic Alias (§3.3.2.1).</summary>
    public ReadOnlySequence<byte> Topic { get; internal init; }

    /// <summary>Packet Identifier, non-zero for QoS 1 and 2, 0 for QoS 0 (§3.3.2.2).</summary>
    public ushort PacketId { get; internal init; }

    /// <summary>PUBLISH properties (§3.3.2.3); empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }

    /// <summary>Application message (§3.3.3).</summary>
    public ReadOnlySequence<byte> Payload { get; internal init; }
}

/// <summary>A decoded PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4-§3.7).</summary>
public readonly struct MqttAck
{
    /// <summary>Which of the four.</summary>
    public MqttPacketType Type { get; internal init; }

    /// <summary>Packet Identifier, non-zero.</summary>
    public ushort PacketId { get; internal init; }

    /// <summary>Reason code; Success when omitted (§3.4.2.1) and always in v3.1.1.</summary>
    public MqttReasonCode ReasonCode { get; internal init; }

    /// <summary>Properties; empty when omitted and in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }
}

/// <summary>A decoded SUBSCRIBE (§3.8). Entries are already validated.</summary>
public readonly struct MqttSubscribe
{
    /// <summary>Packet Identifier, non-zero.</summary>
    public ushort PacketId { get; internal init; }

    /// <summary>SUBSCRIBE properties (§3.8.2.1); empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }

    /// <summary>The raw payload (§3.8.3): topic filter / options pairs.</summary>
    public ReadOnlySequence<byte> EntriesRaw { get; internal init; }

    /// <summary>How many entries the payload holds (at least one).</summary>
    public int EntryCount { get; internal init; }

    /// <summary>The entries in order.</summary>
    public MqttSubscribeEntryEnumerator GetEntries() => new(EntriesRaw);
}

/// <summary>One SUBSCRIBE entry (§3.8.3.1).</summary>
public readonly struct MqttSubscribeEntry
{
    /// <summary>Topic Filter, UTF-8, validated (§4.7).</summary>
    public ReadOnlySequence<byte> TopicFilter { get; internal init; }

    /// <summary>Maximum QoS 0-2.</summary>
    public byte MaximumQoS { get; internal init; }

    /// <summary>No Local (v5).</summary>
    public bool NoLocal { get; internal init; }

    /// <summary>Retain As Published (v5).</summary>
    public bool RetainAsPublished { get; internal init; }

    /// <summary>Retain Handling 0-2 (v5).</summary>
    public byte RetainHandling { get; internal init; }
}

/// <summary>Allocation-free walk over validated SUBSCRIBE entries.</summary>
public struct MqttSubscribeEntryEnumerator
{
    private ReadOnlySequence<byte> _remaining;

    internal MqttSubscribeEntryEnumerator(ReadOnlySequence<byte> raw)
    {
        _remaining = raw;
        Current = default;
    }

    /// <summary>The current entry.</summary>
    public MqttSubscribeEntry Current { get; private set; }

    /// <summary>Returns this enumerator, for <c>foreach</c>.</summary>
    public readonly MqttSubscribeEntryEnumerator GetEnumerator() => this;

    /// <summary>Advances to the next entry.</summary>
    public bool MoveNext()
    {
        var reader = new SequenceReader<byte>(_remaining);
        if (reader.End)
        {
            return false;
        }

        // Validated by ReadSubscribe; the version only changes which bits may be set, so reading as v5 is exact.
        if (MqttPacketReader.ReadSubscribeEntry(ref reader, MqttProtocolVersion.V500, out var entry) != MqttDecodeError.None)
        {
            _remaining = default;
            return false;
        }

        Current = entry;
        _remaining = reader.UnreadSequence;
        return true;
    }
}

/// <summary>A decoded SUBACK (§3.9); client side.</summary>
public readonly struct MqttSubAck
{
    /// <summary>Packet Identifier.</summary>
    public ushort PacketId { get; internal init; }

    /// <summary>Properties; empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }

    /// <summary>One reason / return code per requested filter.</summary>
    public ReadOnlySequence<byte> ReasonCodes { get; internal init; }
}

/// <summary>A decoded UNSUBSCRIBE (§3.10). Filters are already validated.</summary>
public readonly struct MqttUnsubscribe
{
    /// <summary>Packet Identifier, non-zero.</summary>
    public ushort PacketId { get; internal init; }

    /// <summary>Properties; empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }

    /// <summary>The raw payload (§3.10.3): length-prefixed topic filters.</summary>
    public ReadOnlySequence<byte> FiltersRaw { get; internal init; }

    /// <summary>How many filters the payload holds (at least one).</summary>
    public int FilterCount { get; internal init; }

    /// <summary>The topic filters in order.</summary>
    public MqttTopicFilterEnumerator GetFilters() => new(FiltersRaw);
}

/// <summary>Allocation-free walk over validated length-prefixed UTF-8 strings (UNSUBSCRIBE filters).</summary>
public struct MqttTopicFilterEnumerator
{
    private ReadOnlySequence<byte> _remaining;

    internal MqttTopicFilterEnumerator(ReadOnlySequence<byte> raw)
    {
        _remaining = raw;
        Current = default;
    }

    /// <summary>The current filter, UTF-8.</summary>
    public ReadOnlySequence<byte> Current { get; private set; }

    /// <summary>Returns this enumerator, for <c>foreach</c>.</summary>
    public readonly MqttTopicFilterEnumerator GetEnumerator() => this;

    /// <summary>Advances to the next filter.</summary>
    public bool MoveNext()
    {
        var reader = new SequenceReader<byte>(_remaining);
        if (reader.End || !MqttWire.TryReadBinary(ref reader, out var filter))
        {
            _remaining = default;
            return false;
        }

        Current = filter;
        _remaining = reader.UnreadSequence;
        return true;
    }
}

/// <summary>A decoded UNSUBACK (§3.11); client side.</summary>
public readonly struct MqttUnsubAck
{
    /// <summary>Packet Identifier.</summary>
    public ushort PacketId { get; internal init; }

    /// <summary>Properties; empty in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }

    /// <summary>One reason code per filter (v5); empty in v3.1.1, which has no payload.</summary>
    public ReadOnlySequence<byte> ReasonCodes { get; internal init; }
}

/// <summary>A decoded DISCONNECT (§3.14).</summary>
public readonly struct MqttDisconnect
{
    /// <summary>Reason code; Success (normal disconnection) when omitted and in v3.1.1.</summary>
    public MqttReasonCode ReasonCode { get; internal init; }

    /// <summary>Properties; empty when omitted and in v3.1.1.</summary>
    public MqttProperties Properties { get; internal init; }
}

/// <summary>A decoded AUTH (§3.15), MQTT 5 only.</summary>
public readonly struct MqttAuth
{
    /// <summary>Reason code: Success, ContinueAuthentication or ReAuthenticate; Success when omitted.</summary>
    public MqttReasonCode ReasonCode { get; internal init; }

    /// <summary>Properties.</summary>
    public MqttProperties Properties { get; internal init; }
}
