using System.Buffers.Binary;

namespace Relay.Protocol.Stun;

/// <summary>
/// The STUN message header (RFC 8489 §5).
/// <code>
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |0 0|     STUN Message Type     |         Message Length        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Magic Cookie                          |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Transaction ID (96 bits)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// </code>
/// The 14-bit type interleaves method bits M11..M0 with class bits C1 C0:
/// M11-M7, C1, M6-M4, C0, M3-M0.
/// </summary>
public readonly struct StunHeader
{
    /// <summary>Creates a header value.</summary>
    public StunHeader(ushort messageType, ushort length, uint magicCookie, StunTransactionId transactionId)
    {
        MessageType = messageType;
        Length = length;
        MagicCookie = magicCookie;
        TransactionId = transactionId;
    }

    /// <summary>The raw 14-bit message type.</summary>
    public ushort MessageType { get; }

    /// <summary>Length of the attributes, excluding the 20-byte header.</summary>
    public ushort Length { get; }

    /// <summary>The magic cookie field. For RFC 3489 messages this is the first word of a 128-bit transaction id.</summary>
    public uint MagicCookie { get; }

    /// <summary>The last 96 bits of the transaction id field.</summary>
    public StunTransactionId TransactionId { get; }

    /// <summary>RFC 3489 clients put random bits where the cookie is (RFC 8489 §5, "backwards compatibility").</summary>
    public bool IsClassicRfc3489 => MagicCookie != StunConstants.MagicCookie;

    /// <summary>Method bits.</summary>
    public ushort Method => GetMethod(MessageType);

    /// <summary>Class bits.</summary>
    public StunClass Class => GetClass(MessageType);

    /// <summary>Extracts the method from a message type.</summary>
    public static ushort GetMethod(ushort messageType) =>
        (ushort)((messageType & 0x000F) | ((messageType & 0x00E0) >> 1) | ((messageType & 0x3E00) >> 2));

    /// <summary>Extracts the class from a message type.</summary>
    public static StunClass GetClass(ushort messageType) =>
        (StunClass)(((messageType >> 4) & 0x1) | ((messageType >> 7) & 0x2));

    /// <summary>Combines a method and class into a message type.</summary>
    public static ushort ComposeType(ushort method, StunClass stunClass)
    {
        var c = (int)stunClass;
        return (ushort)((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
            | ((c & 0x1) << 4) | ((c & 0x2) << 7));
    }

    /// <summary>Combines a method and class into a message type.</summary>
    public static ushort ComposeType(StunMethod method, StunClass stunClass) => ComposeType((ushort)method, stunClass);

    /// <summary>
    /// Reads a header from at least 20 bytes without validating it. Use <see cref="StunMessageReader"/>
    /// for validation.
    /// </summary>
    public static StunHeader Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt16BigEndian(source),
        BinaryPrimitives.ReadUInt16BigEndian(source[2..]),
        BinaryPrimitives.ReadUInt32BigEndian(source[4..]),
        StunTransactionId.Read(source[8..]));
}
