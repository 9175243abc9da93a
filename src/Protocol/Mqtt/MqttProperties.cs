using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// The MQTT 5 properties (§2.2.2) of one packet, decoded into fields without allocation. String and
/// binary properties are views of the packet with a <c>Has*</c> flag; user properties stay a raw view
/// walked by <see cref="GetUserProperties"/>. Valid until the caller's <c>AdvanceTo</c>.
/// </summary>
public readonly struct MqttProperties
{
    private readonly MqttPropertyValues _v;

    internal MqttProperties(in MqttPropertyValues values) => _v = values;

    /// <summary>True when the packet carried no properties (or is MQTT 3.1.1).</summary>
    public bool IsEmpty => _v.Raw.IsEmpty;

    /// <summary>All property bytes as received, without the Property Length prefix.</summary>
    public ReadOnlySequence<byte> Raw => _v.Raw;

    /// <summary>0x01 Payload Format Indicator (§3.3.2.3.2).</summary>
    public byte? PayloadFormatIndicator => _v.PayloadFormatIndicator;

    /// <summary>0x02 Message Expiry Interval, seconds (§3.3.2.3.3).</summary>
    public uint? MessageExpiryInterval => _v.MessageExpiryInterval;

    /// <summary>True when 0x03 Content Type is present.</summary>
    public bool HasContentType => _v.HasContentType;

    /// <summary>0x03 Content Type, UTF-8 (§3.3.2.3.9).</summary>
    public ReadOnlySequence<byte> ContentType => _v.ContentType;

    /// <summary>True when 0x08 Response Topic is present.</summary>
    public bool HasResponseTopic => _v.HasResponseTopic;

    /// <summary>0x08 Response Topic, UTF-8 (§3.3.2.3.5).</summary>
    public ReadOnlySequence<byte> ResponseTopic => _v.ResponseTopic;

    /// <summary>True when 0x09 Correlation Data is present.</summary>
    public bool HasCorrelationData => _v.HasCorrelationData;

    /// <summary>0x09 Correlation Data, binary (§3.3.2.3.6).</summary>
    public ReadOnlySequence<byte> CorrelationData => _v.CorrelationData;

    /// <summary>0x0B Subscription Identifier (§3.8.2.1.2); in a received PUBLISH, the first one.</summary>
    public uint? SubscriptionIdentifier => _v.SubscriptionIdentifier;

    /// <summary>0x11 Session Expiry Interval, seconds (§3.1.2.11.2).</summary>
    public uint? SessionExpiryInterval => _v.SessionExpiryInterval;

    /// <summary>True when 0x12 Assigned Client Identifier is present.</summary>
    public bool HasAssignedClientIdentifier => _v.HasAssignedClientIdentifier;

    /// <summary>0x12 Assigned Client Identifier, UTF-8 (§3.2.2.3.7).</summary>
    public ReadOnlySequence<byte> AssignedClientIdentifier => _v.AssignedClientIdentifier;

    /// <summary>0x13 Server Keep Alive, seconds (§3.2.2.3.14).</summary>
    public ushort? ServerKeepAlive => _v.ServerKeepAlive;

    /// <summary>True when 0x15 Authentication Method is present.</summary>
    public bool HasAuthenticationMethod => _v.HasAuthenticationMethod;

    /// <summary>0x15 Authentication Method, UTF-8 (§3.1.2.11.9).</summary>
    public ReadOnlySequence<byte> AuthenticationMethod => _v.AuthenticationMethod;

    /// <summary>True when 0x16 Authentication Data is present.</summary>
    public bool HasAuthenticationData => _v.HasAuthenticationData;

    /// <summary>0x16 Authentication Data, binary (§3.1.2.11.10).</summary>
    public ReadOnlySequence<byte> AuthenticationData => _v.AuthenticationData;

    /// <summary>0x17 Request Problem Information, 0 or 1 (§3.1.2.11.7).</summary>
    public byte? RequestProblemInformation => _v.RequestProblemInformation;

    /// <summary>0x18 Will Delay Interval, seconds (§3.1.3.2.2).</summary>
    public uint? WillDelayInterval => _v.WillDelayInterval;

    /// <summary>0x19 Request Response Information, 0 or 1 (§3.1.2.11.6).</summary>
    public byte? RequestResponseInformation => _v.RequestResponseInformation;

    /// <summary>True when 0x1A Response Information is present.</summary>
    public bool HasResponseInformation => _v.HasResponseInformation;

    /// <summary>0x1A Response Information, UTF-8 (§3.2.2.3.15).</summary>
    public ReadOnlySequence<byte> ResponseInformation => _v.ResponseInformation;

    /// <summary>True when 0x1C Server Reference is present.</summary>
    public bool HasServerReference => _v.HasServerReference;

    /// <summary>0x1C Server Reference, UTF-8 (§3.2.2.3.16).</summary>
    public ReadOnlySequence<byte> ServerReference => _v.ServerReference;

    /// <summary>True when 0x1F Reason String is present.</summary>
    public bool HasReasonString => _v.HasReasonString;

    /// <summary>0x1F Reason String, UTF-8 (§3.2.2.3.9).</summary>
    public ReadOnlySequence<byte> ReasonString => _v.ReasonString;

    /// <summary>0x21 Receive Maximum, non-zero (§3.1.2.11.3).</summary>
    public ushort? ReceiveMaximum => _v.ReceiveMaximum;

    /// <summary>0x22 Topic Alias Maximum (§3.1.2.11.5).</summary>
    public ushort? TopicAliasMaximum => _v.TopicAliasMaximum;

    /// <summary>0x23 Topic Alias, non-zero (§3.3.2.3.4).</summary>
    public ushort? TopicAlias => _v.TopicAlias;

    /// <summary>0x24 Maximum QoS, 0 or 1 (§3.2.2.3.4).</summary>
    public byte? MaximumQoS => _v.MaximumQoS;

    /// <summary>0x25 Retain Available, 0 or 1 (§3.2.2.3.5).</summary>
    public byte? RetainAvailable => _v.RetainAvailable;

    /// <summary>0x27 Maximum Packet Size, non-zero (§3.1.2.11.4).</summary>
    public uint? MaximumPacketSize => _v.MaximumPacketSize;

    /// <summary>0x28 Wildcard Subscription Available, 0 or 1 (§3.2.2.3.11).</summary>
    public byte? WildcardSubscriptionAvailable => _v.WildcardSubscriptionAvailable;

    /// <summary>0x29 Subscription Identifier Available, 0 or 1 (§3.2.2.3.12).</summary>
    public byte? SubscriptionIdentifierAvailable => _v.SubscriptionIdentifierAvailable;

    /// <summary>0x2A Shared Subscription Available, 0 or 1 (§3.2.2.3.13).</summary>
    public byte? SharedSubscriptionAvailable => _v.SharedSubscriptionAvailable;

    /// <summary>How many 0x26 User Property pairs there are (§3.1.2.11.8).</summary>
    public int UserPropertyCount => _v.UserPropertyCount;

    /// <summary>
    /// The raw property bytes that hold the user properties (possibly interleaved with others);
    /// walk them with <see cref="GetUserProperties"/>.
    /// </summary>
    public ReadOnlySequence<byte> UserPropertiesRaw => _v.UserPropertyCount == 0 ? default : _v.Raw;

    /// <summary>The user properties in wire order (order matters, §3.3.2.3.7), as name/value UTF-8 views.</summary>
    public MqttUserPropertyEnumerator GetUserProperties() => new(UserPropertiesRaw);

    /// <summary>
    /// The length of these properties as a PUBLISH sent to subscribers carries them (§3.3.4: forwarded
    /// unaltered, except the Topic Alias, which is per connection, and Subscription Identifiers, which the
    /// server sets per subscriber).
    /// </summary>
    public int GetForwardableLength()
    {
        var length = 0;
        var reader = new SequenceReader<byte>(_v.Raw);
        while (MqttPropertyReader.TryReadNext(ref reader, out var id, out var entry))
        {
            if (IsForwarded(id))
            {
                length += (int)entry.Length;
            }
        }

        return length;
    }

    /// <summary>
    /// Copies the properties that <see cref="GetForwardableLength"/> measures into <paramref name="destination"/>
    /// (property entries only, no length prefix), to be stored once and passed as
    /// <see cref="MqttPublishProperties.ForwardedProperties"/>. Returns the bytes written.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than <see cref="GetForwardableLength"/>.</exception>
    public int CopyForwardableTo(Span<byte> destination)
    {
        var written = 0;
        var reader = new SequenceReader<byte>(_v.Raw);
        while (MqttPropertyReader.TryReadNext(ref reader, out var id, out var entry))
        {
            if (IsForwarded(id))
            {
                entry.CopyTo(destination[written..]);
                written += (int)entry.Length;
            }
        }

        return written;
    }

    // §3.3.4: Topic Alias (0x23) is per connection and Subscription Identifiers (0x0B) are per subscriber.
    private static bool IsForwarded(int id) => id is not (0x23 or 0x0B);
}

/// <summary>One MQTT 5 User Property (§3.1.2.11.8): a UTF-8 string pair, as views.</summary>
public readonly struct MqttUserProperty
{
    internal MqttUserProperty(ReadOnlySequence<byte> name, ReadOnlySequence<byte> value)
    {
        Name = name;
        Value = value;
    }

    /// <summary>The name, UTF-8.</summary>
    public ReadOnlySequence<byte> Name { get; }

    /// <summary>The value, UTF-8.</summary>
    public ReadOnlySequence<byte> Value { get; }

    /// <summary>Deconstructs into name and value.</summary>
    public void Deconstruct(out ReadOnlySequence<byte> name, out ReadOnlySequence<byte> value)
    {
        name = Name;
        value = Value;
    }
}

/// <summary>Allocation-free walk over the User Properties of an already validated property block.</summary>
public struct MqttUserPropertyEnumerator
{
    private ReadOnlySequence<byte> _remaining;

    internal MqttUserPropertyEnumerator(ReadOnlySequence<byte> raw)
    {
        _remaining = raw;
        Current = default;
    }

    /// <summary>The current pair.</summary>
    public MqttUserProperty Current { get; private set; }

    /// <summary>Returns this enumerator, for <c>foreach</c>.</summary>
    public readonly MqttUserPropertyEnumerator GetEnumerator() => this;

    /// <summary>Advances to the next user property.</summary>
    public bool MoveNext()
    {
        var reader = new SequenceReader<byte>(_remaining);
        while (MqttPropertyReader.TryReadNext(ref reader, out var id, out var entry))
        {
            if (id != 0x26)
            {
                continue;
            }

            // The entry is validated: identifier byte, then two length-prefixed strings (§1.5.7).
            var pair = new SequenceReader<byte>(entry);
            pair.Advance(1);
            MqttWire.TryReadBinary(ref pair, out var name);
            MqttWire.TryReadBinary(ref pair, out var value);
            Current = new MqttUserProperty(name, value);
            _remaining = reader.UnreadSequence;
            return true;
        }

        _remaining = default;
        return false;
    }
}

/// <summary>Mutable accumulator behind <see cref="MqttProperties"/>; filled by the property reader.</summary>
internal struct MqttPropertyValues
{
    public ReadOnlySequence<byte> Raw;
    public byte? PayloadFormatIndicator;
    public uint? MessageExpiryInterval;
    public bool HasContentType;
    public ReadOnlySequence<byte> ContentType;
    public bool HasResponseTopic;
    public ReadOnlySequence<byte> ResponseTopic;
    public bool HasCorrelationData;
    public ReadOnlySequence<byte> CorrelationData;
    public uint? SubscriptionIdentifier;
    public uint? SessionExpiryInterval;
    public bool HasAssignedClientIdentifier;
    public ReadOnlySequence<byte> AssignedClientIdentifier;
    public ushort? ServerKeepAlive;
    public bool HasAuthenticationMethod;
    public ReadOnlySequence<byte> AuthenticationMethod;
    public bool HasAuthenticationData;
    public ReadOnlySequence<byte> AuthenticationData;
    public byte? RequestProblemInformation;
    public uint? WillDelayInterval;
    public byte? RequestResponseInformation;
    public bool HasResponseInformation;
    public ReadOnlySequence<byte> ResponseInformation;
    public bool HasServerReference;
    public ReadOnlySequence<byte> ServerReference;
    public bool HasReasonString;
    public ReadOnlySequence<byte> ReasonString;
    public ushort? ReceiveMaximum;
    public ushort? TopicAliasMaximum;
    public ushort? TopicAlias;
    public byte? MaximumQoS;
    public byte? RetainAvailable;
    public uint? MaximumPacketSize;
    public byte? WildcardSubscriptionAvailable;
    public byte? SubscriptionIdentifierAvailable;
    public byte? SharedSubscriptionAvailable;
    public int UserPropertyCount;
}
