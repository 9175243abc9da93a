namespace Relay.Protocol.Stun;

/// <summary>Why a buffer was not accepted as a STUN message.</summary>
/// <remarks>
/// Header errors mean the bytes are not STUN at all, so a UDP server drops them and a TCP server closes
/// the stream. Body errors mean a well-framed STUN message carries a malformed attribute, so a server
/// answers 400 (RFC 8489 §6.3.1).
/// </remarks>
public enum StunParseError : byte
{
    /// <summary>No error.</summary>
    None = 0,

    // Header errors: not STUN.
    /// <summary>The two most significant bits are not zero (RFC 8489 §5).</summary>
    NotStun,
    /// <summary>Message length is not a multiple of 4 (RFC 8489 §5).</summary>
    LengthNotMultipleOfFour,
    /// <summary>The declared length exceeds the configured maximum message size.</summary>
    TooLarge,
    /// <summary>A datagram's size disagrees with the header's length field.</summary>
    LengthMismatch,

    // Body errors: STUN, but malformed.
    /// <summary>An attribute's declared length runs past the end of the message.</summary>
    AttributeOverflow,
    /// <summary>A known attribute has a length or content its RFC forbids.</summary>
    InvalidAttribute,
    /// <summary>FINGERPRINT is not the last attribute (RFC 8489 §14.7).</summary>
    FingerprintNotLast,
    /// <summary>More attributes than the configured maximum.</summary>
    TooManyAttributes,
}

/// <summary>Classification helpers for <see cref="StunParseError"/>.</summary>
public static class StunParseErrors
{
    /// <summary>True when the header itself is not STUN: drop (UDP) or close (TCP), never answer.</summary>
    public static bool IsHeaderError(this StunParseError error) => error is >= StunParseError.NotStun and <= StunParseError.LengthMismatch;
}
