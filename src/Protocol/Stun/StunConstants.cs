namespace Relay.Protocol.Stun;

/// <summary>Fixed values from RFC 8489 §5 and §14.7.</summary>
public static class StunConstants
{
    /// <summary>The magic cookie, 0x2112A442, that marks an RFC 5389/8489 message (RFC 8489 §5).</summary>
    public const uint MagicCookie = 0x2112A442;

    /// <summary>Every STUN message starts with a 20-byte header (RFC 8489 §5).</summary>
    public const int HeaderLength = 20;

    /// <summary>Attribute header: 16-bit type and 16-bit length (RFC 8489 §14).</summary>
    public const int AttributeHeaderLength = 4;

    /// <summary>The value FINGERPRINT's CRC-32 is XOR'ed with (RFC 8489 §14.7).</summary>
    public const uint FingerprintXor = 0x5354554E;

    /// <summary>HMAC-SHA1 output carried by MESSAGE-INTEGRITY (RFC 8489 §14.5).</summary>
    public const int MessageIntegrityLength = 20;

    /// <summary>Full HMAC-SHA256 output; MESSAGE-INTEGRITY-SHA256 may be truncated to 16..32 bytes (RFC 8489 §14.6).</summary>
    public const int MessageIntegritySha256Length = 32;

    /// <summary>FINGERPRINT value length (RFC 8489 §14.7).</summary>
    public const int FingerprintLength = 4;

    /// <summary>
    /// RFC 8489 §14.3 has senders keep USERNAME under 509 bytes; RFC 5389 allowed under 513. Receivers
    /// accept the older, larger bound so that RFC 5389 clients keep working.
    /// </summary>
    public const int MaxUsernameBytes = 512;

    /// <summary>
    /// REALM, NONCE, SOFTWARE and the ERROR-CODE reason phrase are "fewer than 128 characters", which
    /// RFC 8489 §14.9/§14.10/§14.14/§14.8 bound at 763 bytes of UTF-8.
    /// </summary>
    public const int MaxQuotedStringBytes = 763;

    /// <summary>ALTERNATE-DOMAIN: at most 255 bytes (RFC 8489 §14.16).</summary>
    public const int MaxAlternateDomainBytes = 255;

    /// <summary>USERHASH is SHA-256 output (RFC 8489 §14.4).</summary>
    public const int UserhashLength = 32;
}

/// <summary>The four message classes, encoded in bits C1 and C0 of the message type (RFC 8489 §5).</summary>
public enum StunClass : byte
{
    /// <summary>0b00.</summary>
    Request = 0,
    /// <summary>0b01.</summary>
    Indication = 1,
    /// <summary>0b10.</summary>
    SuccessResponse = 2,
    /// <summary>0b11.</summary>
    ErrorResponse = 3,
}

/// <summary>Method numbers from the IANA STUN registry (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1).</summary>
public enum StunMethod : ushort
{
    /// <summary>RFC 8489.</summary>
    Binding = 0x001,
    /// <summary>RFC 8656.</summary>
    Allocate = 0x003,
    /// <summary>RFC 8656.</summary>
    Refresh = 0x004,
    /// <summary>RFC 8656 (indication only).</summary>
    Send = 0x006,
    /// <summary>RFC 8656 (indication only).</summary>
    Data = 0x007,
    /// <summary>RFC 8656.</summary>
    CreatePermission = 0x008,
    /// <summary>RFC 8656.</summary>
    ChannelBind = 0x009,
    /// <summary>RFC 6062.</summary>
    Connect = 0x00A,
    /// <summary>RFC 6062.</summary>
    ConnectionBind = 0x00B,
    /// <summary>RFC 6062.</summary>
    ConnectionAttempt = 0x00C,
}

/// <summary>Attribute types from the IANA STUN registry.</summary>
/// <remarks>
/// 0x0000-0x7FFF are comprehension-required: a receiver that does not understand one must reject the
/// request with 420 (RFC 8489 §14). 0x8000-0xFFFF are comprehension-optional and may be ignored.
/// </remarks>
public enum StunAttributeType : ushort
{
#pragma warning disable CS1591 // names are the registry's names
    MappedAddress = 0x0001,
    ResponseAddress = 0x0002, // RFC 3489, deprecated
    ChangeRequest = 0x0003, // RFC 5780
    SourceAddress = 0x0004, // RFC 3489, deprecated
    ChangedAddress = 0x0005, // RFC 3489, deprecated
    Username = 0x0006,
    Password = 0x0007, // RFC 3489, deprecated
    MessageIntegrity = 0x0008,
    ErrorCode = 0x0009,
    UnknownAttributes = 0x000A,
    ReflectedFrom = 0x000B, // RFC 3489, deprecated
    ChannelNumber = 0x000C, // RFC 8656
    Lifetime = 0x000D, // RFC 8656
    XorPeerAddress = 0x0012, // RFC 8656
    Data = 0x0013, // RFC 8656
    Realm = 0x0014,
    Nonce = 0x0015,
    XorRelayedAddress = 0x0016, // RFC 8656
    RequestedAddressFamily = 0x0017, // RFC 8656
    EvenPort = 0x0018, // RFC 8656
    RequestedTransport = 0x0019, // RFC 8656
    DontFragment = 0x001A, // RFC 8656
    MessageIntegritySha256 = 0x001C,
    PasswordAlgorithm = 0x001D,
    Userhash = 0x001E,
    XorMappedAddress = 0x0020,
    ReservationToken = 0x0022, // RFC 8656
    Priority = 0x0024, // RFC 8445
    UseCandidate = 0x0025, // RFC 8445
    Padding = 0x0026, // RFC 5780
    ResponsePort = 0x0027, // RFC 5780
    ConnectionId = 0x002A, // RFC 6062
    AdditionalAddressFamily = 0x8000, // RFC 8656
    AddressErrorCode = 0x8001, // RFC 8656
    PasswordAlgorithms = 0x8002,
    AlternateDomain = 0x8003,
    Icmp = 0x8004, // RFC 8656
    Software = 0x8022,
    AlternateServer = 0x8023,
    Fingerprint = 0x8028,
    IceControlled = 0x8029, // RFC 8445
    IceControlling = 0x802A, // RFC 8445
    ResponseOrigin = 0x802B, // RFC 5780
    OtherAddress = 0x802C, // RFC 5780
#pragma warning restore CS1591
}

/// <summary>PASSWORD-ALGORITHM values (RFC 8489 §18.5).</summary>
public enum StunPasswordAlgorithm : ushort
{
    /// <summary>MD5(username ":" realm ":" password), the RFC 5389 long-term key.</summary>
    Md5 = 0x0001,
    /// <summary>SHA-256(username ":" realm ":" password).</summary>
    Sha256 = 0x0002,
}

/// <summary>Helpers over <see cref="StunAttributeType"/> values.</summary>
public static class StunAttributeTypes
{
    /// <summary>RFC 8489 §14: types 0x0000-0x7FFF are comprehension-required.</summary>
    public static bool IsComprehensionRequired(ushort type) => type < 0x8000;
}
