namespace Relay.Protocol.Mqtt;

/// <summary>CONNACK properties to send (§3.2.2.3); null = omitted. Ignored for v3.1.1.</summary>
public struct MqttConnAckProperties
{
    /// <summary>0x11 Session Expiry Interval.</summary>
    public uint? SessionExpiryInterval { get; set; }

    /// <summary>0x21 Receive Maximum.</summary>
    public ushort? ReceiveMaximum { get; set; }

    /// <summary>0x24 Maximum QoS (0 or 1; omit for 2).</summary>
    public byte? MaximumQoS { get; set; }

    /// <summary>0x25 Retain Available.</summary>
    public bool? RetainAvailable { get; set; }

    /// <summary>0x27 Maximum Packet Size.</summary>
    public uint? MaximumPacketSize { get; set; }

    /// <summary>0x12 Assigned Client Identifier.</summary>
    public string? AssignedClientIdentifier { get; set; }

    /// <summary>0x22 Topic Alias Maximum.</summary>
    public ushort? TopicAliasMaximum { get; set; }

    /// <summary>0x1F Reason String.</summary>
    public string? ReasonString { get; set; }

    /// <summary>0x28 Wildcard Subscription Available.</summary>
    public bool? WildcardSubscriptionAvailable { get; set; }

    /// <summary>0x29 Subscription Identifiers Available.</summary>
    public bool? SubscriptionIdentifiersAvailable { get; set; }

    /// <summary>0x2A Shared Subscription Available.</summary>
    public bool? SharedSubscriptionAvailable { get; set; }

    /// <summary>0x13 Server Keep Alive.</summary>
    public ushort? ServerKeepAlive { get; set; }

    /// <summary>0x1A Response Information.</summary>
    public string? ResponseInformation { get; set; }

    /// <summary>0x1C Server Reference.</summary>
    public string? ServerReference { get; set; }

    /// <summary>0x15 Authentication Method.</summary>
    public string? AuthenticationMethod { get; set; }

    /// <summary>0x26 User Properties, in order.</summary>
    public IReadOnlyList<KeyValuePair<string, string>>? UserProperties { get; set; }
}

/// <summary>PUBLISH properties to send (§3.3.2.3); null/empty = omitted. Ignored for v3.1.1.</summary>
public struct MqttPublishProperties
{
    /// <summary>0x01 Payload Format Indicator.</summary>
    public byte? PayloadFormatIndicator { get; set; }

    /// <summary>0x02 Message Expiry Interval (the remaining lifetime when forwarding, §3.3.2.3.3).</summary>
    public uint? MessageExpiryInterval { get; set; }

    /// <summary>0x23 Topic Alias.</summary>
    public ushort? TopicAlias { get; set; }

    /// <summary>0x08 Response Topic.</summary>
    public string? ResponseTopic { get; set; }

    /// <summary>0x09 Correlation Data; sent only when <see cref="HasCorrelationData"/>.</summary>
    public ReadOnlyMemory<byte> CorrelationData { get; set; }

    /// <summary>Whether to send <see cref="CorrelationData"/> (which may legitimately be empty).</summary>
    public bool HasCorrelationData { get; set; }

    /// <summary>0x26 User Properties, in order.</summary>
    public IReadOnlyList<KeyValuePair<string, string>>? UserProperties { get; set; }

    /// <summary>0x0B Subscription Identifiers of the matching subscriptions (§3.3.2.3.8); 0 entries are invalid.</summary>
    public ReadOnlyMemory<uint> SubscriptionIdentifiers { get; set; }

    /// <summary>0x03 Content Type.</summary>
    public string? ContentType { get; set; }

    /// <summary>
    /// Pre-encoded property entries (no length prefix) appended as they are, typically from
    /// <see cref="MqttProperties.CopyForwardableTo"/> of the publisher's PUBLISH. The caller must not
    /// also set the same single-valued properties above.
    /// </summary>
    public ReadOnlyMemory<byte> ForwardedProperties { get; set; }
}

/// <summary>One SUBSCRIBE entry to send (§3.8.3.1).</summary>
public struct MqttSubscriptionRequest
{
    /// <summary>Creates a request for <paramref name="topicFilter"/> at <paramref name="maximumQoS"/>.</summary>
    public MqttSubscriptionRequest(string topicFilter, byte maximumQoS)
    {
        TopicFilter = topicFilter;
        MaximumQoS = maximumQoS;
    }

    /// <summary>Topic Filter.</summary>
    public string TopicFilter { get; set; }

    /// <summary>Maximum QoS 0-2.</summary>
    public byte MaximumQoS { get; set; }

    /// <summary>No Local (v5).</summary>
    public bool NoLocal { get; set; }

    /// <summary>Retain As Published (v5).</summary>
    public bool RetainAsPublished { get; set; }

    /// <summary>Retain Handling 0-2 (v5).</summary>
    public byte RetainHandling { get; set; }
}

/// <summary>What a client puts into CONNECT (§3.1).</summary>
public struct MqttConnectOptions
{
    /// <summary>Protocol version; V310 writes "MQIsdp" level 3.</summary>
    public MqttProtocolVersion Version { get; set; }

    /// <summary>Client Identifier; null or empty = let the server assign one.</summary>
    public string? ClientId { get; set; }

    /// <summary>Clean Start / Clean Session.</summary>
    public bool CleanStart { get; set; }

    /// <summary>Keep Alive, seconds.</summary>
    public ushort KeepAliveSeconds { get; set; }

    /// <summary>User Name; null = omitted.</summary>
    public string? Username { get; set; }

    /// <summary>Password; sent only when <see cref="HasPassword"/>.</summary>
    public ReadOnlyMemory<byte> Password { get; set; }

    /// <summary>Whether to send <see cref="Password"/>.</summary>
    public bool HasPassword { get; set; }

    /// <summary>Will Topic; null = no will.</summary>
    public string? WillTopic { get; set; }

    /// <summary>Will Payload.</summary>
    public ReadOnlyMemory<byte> WillPayload { get; set; }

    /// <summary>Will QoS.</summary>
    public byte WillQoS { get; set; }

    /// <summary>Will Retain.</summary>
    public bool WillRetain { get; set; }

    /// <summary>v5 will property 0x18 Will Delay Interval.</summary>
    public uint? WillDelayInterval { get; set; }

    /// <summary>v5 0x11 Session Expiry Interval.</summary>
    public uint? SessionExpiryInterval { get; set; }

    /// <summary>v5 0x21 Receive Maximum.</summary>
    public ushort? ReceiveMaximum { get; set; }

    /// <summary>v5 0x27 Maximum Packet Size.</summary>
    public uint? MaximumPacketSize { get; set; }

    /// <summary>v5 0x22 Topic Alias Maximum.</summary>
    public ushort? TopicAliasMaximum { get; set; }

    /// <summary>v5 0x15 Authentication Method.</summary>
    public string? AuthenticationMethod { get; set; }

    /// <summary>v5 0x16 Authentication Data (sent when non-empty).</summary>
    public ReadOnlyMemory<byte> AuthenticationData { get; set; }

    /// <summary>v5 0x26 User Properties.</summary>
    public IReadOnlyList<KeyValuePair<string, string>>? UserProperties { get; set; }
}
