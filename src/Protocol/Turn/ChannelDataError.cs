namespace Relay.Protocol.Turn;

/// <summary>Why bytes were not accepted as a ChannelData message.</summary>
/// <remarks>
/// Every one of these means the message is dropped: RFC 8656 §12.6 says a message on a reserved channel
/// or in a datagram too short for its Length "is silently discarded", so a UDP server drops the datagram
/// and counts it. The stream reader does not skip a rejected message (it advances only on Done), so a TCP
/// server closes the connection: a peer that sends any of these over a stream is either not speaking TURN
/// or using a channel no ChannelBind can have granted (RFC 8656 §12.2 allows only 0x4000-0x4FFF).
/// </remarks>
public enum ChannelDataError : byte
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>The first two bits are not 01 (RFC 8656 §12, Table 3; RFC 7983 §7): STUN, DTLS, RTP or something else.</summary>
    NotChannelData,

    /// <summary>The first byte is 0x50-0x7F: a channel number in the reserved range 0x5000-0x7FFF (RFC 8656 §12, Table 2; §12.6).</summary>
    ReservedChannel,

    /// <summary>The Length field exceeds <see cref="ChannelDataLimits.MaxDataLength"/>.</summary>
    TooLarge,

    /// <summary>A datagram is shorter than 4 + Length bytes (RFC 8656 §12.6), or than the 4-byte header itself.</summary>
    LengthMismatch,
}
