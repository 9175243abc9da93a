namespace Relay.Protocol.Turn;

/// <summary>
/// TURN channel numbers (RFC 8656 §12) and the first-byte test that tells a ChannelData message from
/// STUN and the other protocols sharing a 5-tuple (RFC 8656 §12, Table 3; RFC 7983 §7).
/// </summary>
/// <remarks>
/// RFC 8656 §12, Table 2:
/// <code>
/// 0x0000 through 0x3FFF: These values can never be used for channel numbers.
/// 0x4000 through 0x4FFF: These values are the allowed channel numbers (4096 possible values).
/// 0x5000 through 0xFFFF: Reserved (For DTLS-SRTP multiplexing collision avoidance, see [RFC7983]).
/// </code>
/// RFC 5766 §11 allowed 0x4000-0x7FFF; RFC 8656 §12 notes that the narrower range is not backwards
/// compatible with it, and clients still pick from the old range (coturn 4.6.1's turnutils_uclient does). First bytes 0x50-0x7F still start with the bits 01, so they are framed as
/// ChannelData and reported as a reserved channel rather than as some other protocol.
/// </remarks>
public static class TurnChannel
{
    /// <summary>The lowest channel number a client may bind (RFC 8656 §12, Table 2).</summary>
    public const ushort MinNumber = 0x4000;

    /// <summary>The highest channel number a client may bind (RFC 8656 §12, Table 2); 0x5000-0xFFFF are reserved.</summary>
    public const ushort MaxNumber = 0x4FFF;

    /// <summary>The highest channel number RFC 5766 §11 allowed, which deployed clients still bind.</summary>
    public const ushort MaxRfc5766Number = 0x7FFF;

    /// <summary>Channel Number (2 bytes) and Length (2 bytes) (RFC 8656 §12.4).</summary>
    public const int HeaderLength = 4;

    /// <summary>True for the channel numbers RFC 8656 §12 allows: <see cref="MinNumber"/> to <see cref="MaxNumber"/>.</summary>
    public static bool IsValidNumber(ushort number) => (uint)(number - MinNumber) <= MaxNumber - MinNumber;

    /// <summary>True for the channel numbers RFC 5766 §11 allowed: <see cref="MinNumber"/> to <see cref="MaxRfc5766Number"/>.</summary>
    public static bool IsValidRfc5766Number(ushort number) => (uint)(number - MinNumber) <= MaxRfc5766Number - MinNumber;

    /// <summary>
    /// True when the first two bits are 01, the ChannelData framing (first byte 64-127). Of these,
    /// RFC 8656 §12 Table 3 assigns only 64-79 to TURN channels; <see cref="ChannelDataReader"/> reports
    /// 80-127 as <see cref="ChannelDataError.ReservedChannel"/>.
    /// </summary>
    public static bool LooksLikeChannelData(byte firstByte) => (firstByte & 0xC0) == 0x40;
}
