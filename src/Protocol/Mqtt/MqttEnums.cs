namespace Relay.Protocol.Mqtt;

/// <summary>The Protocol Level byte of CONNECT (MQTT 5.0 §3.1.2.2, MQTT 3.1.1 §3.1.2.2).</summary>
public enum MqttProtocolVersion : byte
{
    /// <summary>MQTT 3.1, protocol name "MQIsdp"; accepted on CONNECT and then spoken as 3.1.1.</summary>
    V310 = 3,

    /// <summary>MQTT 3.1.1.</summary>
    V311 = 4,

    /// <summary>MQTT 5.0.</summary>
    V500 = 5,
}

/// <summary>MQTT Control Packet type, bits 7-4 of the first fixed-header byte (§2.1.2).</summary>
public enum MqttPacketType : byte
{
    /// <summary>Client request to connect (§3.1).</summary>
    Connect = 1,

    /// <summary>Connect acknowledgment (§3.2).</summary>
    ConnAck,

    /// <summary>Publish message (§3.3).</summary>
    Publish,

    /// <summary>Publish acknowledgment, QoS 1 (§3.4).</summary>
    PubAck,

    /// <summary>Publish received, QoS 2 part 1 (§3.5).</summary>
    PubRec,

    /// <summary>Publish release, QoS 2 part 2 (§3.6).</summary>
    PubRel,

    /// <summary>Publish complete, QoS 2 part 3 (§3.7).</summary>
    PubComp,

    /// <summary>Subscribe request (§3.8).</summary>
    Subscribe,

    /// <summary>Subscribe acknowledgment (§3.9).</summary>
    SubAck,

    /// <summary>Unsubscribe request (§3.10).</summary>
    Unsubscribe,

    /// <summary>Unsubscribe acknowledgment (§3.11).</summary>
    UnsubAck,

    /// <summary>PING request (§3.12).</summary>
    PingReq,

    /// <summary>PING response (§3.13).</summary>
    PingResp,

    /// <summary>Disconnect notification (§3.14).</summary>
    Disconnect,

    /// <summary>Authentication exchange, MQTT 5 only (§3.15).</summary>
    Auth,
}

/// <summary>MQTT 5 reason codes (MQTT 5.0 §2.4, Table 2-6). Values below 0x80 are success, 0x80 and above failure.</summary>
public enum MqttReasonCode : byte
{
    /// <summary>Success / Normal disconnection / Granted QoS 0.</summary>
    Success = 0x00,

    /// <summary>SUBACK: Granted QoS 1.</summary>
    GrantedQoS1 = 0x01,

    /// <summary>SUBACK: Granted QoS 2.</summary>
    GrantedQoS2 = 0x02,

    /// <summary>DISCONNECT: Disconnect with Will Message.</summary>
    DisconnectWithWill = 0x04,

    /// <summary>PUBACK/PUBREC: No matching subscribers.</summary>
    NoMatchingSubscribers = 0x10,

    /// <summary>UNSUBACK: No subscription existed.</summary>
    NoSubscriptionExisted = 0x11,

    /// <summary>AUTH: Continue authentication.</summary>
    ContinueAuthentication = 0x18,

    /// <summary>AUTH: Re-authenticate.</summary>
    ReAuthenticate = 0x19,

    /// <summary>Unspecified error.</summary>
    UnspecifiedError = 0x80,

    /// <summary>Malformed Packet.</summary>
    MalformedPacket = 0x81,

    /// <summary>Protocol Error.</summary>
    ProtocolError = 0x82,

    /// <summary>Implementation specific error.</summary>
    ImplementationSpecificError = 0x83,

    /// <summary>Unsupported Protocol Version.</summary>
    UnsupportedProtocolVersion = 0x84,

    /// <summary>Client Identifier not valid.</summary>
    ClientIdentifierNotValid = 0x85,

    /// <summary>Bad User Name or Password.</summary>
    BadUserNameOrPassword = 0x86,

    /// <summary>Not authorized.</summary>
    NotAuthorized = 0x87,

    /// <summary>Server unavailable.</summary>
    ServerUnavailable = 0x88,

    /// <summary>Server busy.</summary>
    ServerBusy = 0x89,

    /// <summary>Banned.</summary>
    Banned = 0x8A,

    /// <summary>Server shutting down.</summary>
    ServerShuttingDown = 0x8B,

    /// <summary>Bad authentication method.</summary>
    BadAuthenticationMethod = 0x8C,

    /// <summary>Keep Alive timeout.</summary>
    KeepAliveTimeout = 0x8D,

    /// <summary>Session taken over.</summary>
    SessionTakenOver = 0x8E,

    /// <summary>Topic Filter invalid.</summary>
    TopicFilterInvalid = 0x8F,

    /// <summary>Topic Name invalid.</summary>
    TopicNameInvalid = 0x90,

    /// <summary>Packet Identifier in use.</summary>
    PacketIdentifierInUse = 0x91,

    /// <summary>Packet Identifier not found.</summary>
    PacketIdentifierNotFound = 0x92,

    /// <summary>Receive Maximum exceeded.</summary>
    ReceiveMaximumExceeded = 0x93,

    /// <summary>Topic Alias invalid.</summary>
    TopicAliasInvalid = 0x94,

    /// <summary>Packet too large.</summary>
    PacketTooLarge = 0x95,

    /// <summary>Message rate too high.</summary>
    MessageRateTooHigh = 0x96,

    /// <summary>Quota exceeded.</summary>
    QuotaExceeded = 0x97,

    /// <summary>Administrative action.</summary>
    AdministrativeAction = 0x98,

    /// <summary>Payload format invalid.</summary>
    PayloadFormatInvalid = 0x99,

    /// <summary>Retain not supported.</summary>
    RetainNotSupported = 0x9A,

    /// <summary>QoS not supported.</summary>
    QoSNotSupported = 0x9B,

    /// <summary>Use another server.</summary>
    UseAnotherServer = 0x9C,

    /// <summary>Server moved.</summary>
    ServerMoved = 0x9D,

    /// <summary>Shared Subscriptions not supported.</summary>
    SharedSubscriptionsNotSupported = 0x9E,

    /// <summary>Connection rate exceeded.</summary>
    ConnectionRateExceeded = 0x9F,

    /// <summary>Maximum connect time.</summary>
    MaximumConnectTime = 0xA0,

    /// <summary>Subscription Identifiers not supported.</summary>
    SubscriptionIdentifiersNotSupported = 0xA1,

    /// <summary>Wildcard Subscriptions not supported.</summary>
    WildcardSubscriptionsNotSupported = 0xA2,
}

/// <summary>MQTT 3.1.1 CONNACK return codes (MQTT 3.1.1 §3.2.2.3, Table 3.1).</summary>
public enum MqttConnectReturnCode : byte
{
    /// <summary>Connection accepted.</summary>
    Accepted = 0,

    /// <summary>The server does not support the requested protocol level.</summary>
    UnacceptableProtocolVersion = 1,

    /// <summary>The client identifier is well-formed UTF-8 but not allowed by the server.</summary>
    IdentifierRejected = 2,

    /// <summary>The network connection is up but the MQTT service is unavailable.</summary>
    ServerUnavailable = 3,

    /// <summary>The user name or password is malformed.</summary>
    BadUserNameOrPassword = 4,

    /// <summary>The client is not authorized to connect.</summary>
    NotAuthorized = 5,
}

/// <summary>
/// Why bytes were not accepted as an MQTT packet. The engine maps it to a v5 DISCONNECT (or CONNACK)
/// reason code with <see cref="MqttDecodeErrors.ToReasonCode"/>, or closes a v3.1.1 connection
/// (MQTT 3.1.1 §4.8: "the Server MUST close the Network Connection" on a protocol violation).
/// </summary>
public enum MqttDecodeError : byte
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>The bytes cannot be parsed as the packet (§1.5, §2.1, §4.13): reason 0x81.</summary>
    MalformedPacket,

    /// <summary>Parsed, but breaks a protocol rule (duplicate property, property not allowed, empty SUBSCRIBE, ...): reason 0x82.</summary>
    ProtocolError,

    /// <summary>The declared packet size exceeds the configured maximum (§3.1.2.11.4): reason 0x95.</summary>
    PacketTooLarge,

    /// <summary>CONNECT with an unknown protocol name or level (§3.1.2.1, §3.1.2.2): reason 0x84 / v3.1.1 return code 1.</summary>
    UnsupportedProtocolVersion,

    /// <summary>A UTF-8 string is ill-formed or contains U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]): malformed (0x81).</summary>
    InvalidUtf8,

    /// <summary>A PUBLISH topic name contains a wildcard, or is empty without a topic alias ([MQTT-3.3.2-2]): reason 0x90.</summary>
    TopicNameInvalid,

    /// <summary>A SUBSCRIBE/UNSUBSCRIBE topic filter is empty or misuses wildcards ([MQTT-4.7.1-1..3], [MQTT-4.7.3-1]): reason 0x8F.</summary>
    TopicFilterInvalid,

    /// <summary>The CONNECT client identifier is not acceptable as a string (§3.1.3.1): reason 0x85 / v3.1.1 return code 2.</summary>
    ClientIdentifierNotValid,
}

/// <summary>Descriptions and reason-code mapping for <see cref="MqttDecodeError"/>.</summary>
public static class MqttDecodeErrors
{
    /// <summary>A short static description of <paramref name="error"/>, suitable for a log line or a Reason String. Never allocates.</summary>
    public static string Describe(MqttDecodeError error) => error switch
    {
        MqttDecodeError.None => "no error",
        MqttDecodeError.MalformedPacket => "malformed packet",
        MqttDecodeError.ProtocolError => "protocol error",
        MqttDecodeError.PacketTooLarge => "packet exceeds the maximum packet size",
        MqttDecodeError.UnsupportedProtocolVersion => "unsupported protocol name or level",
        MqttDecodeError.InvalidUtf8 => "string is not well-formed UTF-8 or contains U+0000",
        MqttDecodeError.TopicNameInvalid => "topic name invalid",
        MqttDecodeError.TopicFilterInvalid => "topic filter invalid",
        MqttDecodeError.ClientIdentifierNotValid => "client identifier not valid",
        _ => "unknown decode error",
    };

    /// <summary>The MQTT 5 reason code a server sends for <paramref name="error"/> (§2.4, §4.13).</summary>
    public static MqttReasonCode ToReasonCode(MqttDecodeError error) => error switch
    {
        MqttDecodeError.None => MqttReasonCode.Success,
        MqttDecodeError.ProtocolError => MqttReasonCode.ProtocolError,
        MqttDecodeError.PacketTooLarge => MqttReasonCode.PacketTooLarge,
        MqttDecodeError.UnsupportedProtocolVersion => MqttReasonCode.UnsupportedProtocolVersion,
        MqttDecodeError.TopicNameInvalid => MqttReasonCode.TopicNameInvalid,
        MqttDecodeError.TopicFilterInvalid => MqttReasonCode.TopicFilterInvalid,
        MqttDecodeError.ClientIdentifierNotValid => MqttReasonCode.ClientIdentifierNotValid,
        // [MQTT-1.5.4-1]: ill-formed UTF-8 is a Malformed Packet, like every other unparsable field.
        _ => MqttReasonCode.MalformedPacket,
    };
}
