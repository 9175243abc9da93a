using System.Buffers.Binary;
using System.IO.Hashing;

namespace Relay.LoadGen;

/// <summary>RFC 8489 Binding request/response framing, just enough for load generation.</summary>
/// <remarks>
/// LoadGen writes and checks its STUN, TURN and MQTT bytes itself (this file, <see cref="TurnWire"/>,
/// <see cref="MqttWire"/>) instead of using Relay.Protocol's codecs, on purpose: it measures our server
/// side by side with coturn and Mosquitto, so it must speak the RFCs as any client would, and must not share
/// a codec bug with the server it loads (a wrong length or attribute both sides agreed on would pass
/// unnoticed). The CRC-32 is System.IO.Hashing's, as in Relay.Protocol: a library function, not our code.
/// </remarks>
internal static class StunWire
{
    public const int HeaderLength = 20;
    public const int TransactionIdOffset = 8;
    public const int TransactionIdLength = 12;
    public const uint MagicCookie = 0x2112_A442;
    public const ushort BindingRequest = 0x0001;
    public const ushort BindingSuccess = 0x0101;
    private const ushort FingerprintType = 0x8028;
    private const uint FingerprintXor = 0x5354_554E;
    private const int FingerprintAttributeLength = 8;

    public static int RequestLength(bool fingerprint) =>
        HeaderLength + (fingerprint ? FingerprintAttributeLength : 0);

    /// <summary>
    /// Writes a Binding request with the given transaction id. The header is rewritten every time
    /// (it is only 8 bytes) so callers can reuse any scratch buffer without a template.
    /// </summary>
    public static int WriteBindingRequest(Span<byte> dest, ReadOnlySpan<byte> transactionId, bool fingerprint)
    {
        var length = RequestLength(fingerprint);
        var message = dest[..length];
        BinaryPrimitives.WriteUInt16BigEndian(message, BindingRequest);
        BinaryPrimitives.WriteUInt16BigEndian(message[2..], (ushort)(length - HeaderLength));
        BinaryPrimitives.WriteUInt32BigEndian(message[4..], MagicCookie);
        transactionId.CopyTo(message[TransactionIdOffset..]);
        if (fingerprint)
        {
            // RFC 8489 §14.7: the CRC covers the message up to the attribute, with the header length
            // already including the FINGERPRINT attribute itself.
            BinaryPrimitives.WriteUInt16BigEndian(message[HeaderLength..], FingerprintType);
            BinaryPrimitives.WriteUInt16BigEndian(message[(HeaderLength + 2)..], 4);
            var crc = Crc32.HashToUInt32(message[..HeaderLength]) ^ FingerprintXor;
            BinaryPrimitives.WriteUInt32BigEndian(message[(HeaderLength + 4)..], crc);
        }

        return length;
    }

    /// <summary>
    /// True when <paramref name="message"/> is one complete Binding success response with the magic
    /// cookie; attributes are not parsed because servers legitimately differ in what they include.
    /// </summary>
    public static bool IsBindingSuccess(ReadOnlySpan<byte> message)
    {
        if (message.Length < HeaderLength)
        {
            return false;
        }

        return BinaryPrimitives.ReadUInt16BigEndian(message) == BindingSuccess
            && BinaryPrimitives.ReadUInt32BigEndian(message[4..]) == MagicCookie
            && BinaryPrimitives.ReadUInt16BigEndian(message[2..]) + HeaderLength == message.Length;
    }

    /// <summary>Stream framing: total size of the STUN message starting at <paramref name="header"/>.</summary>
    public static int FrameLength(ReadOnlySpan<byte> header) =>
        HeaderLength + BinaryPrimitives.ReadUInt16BigEndian(header[2..]);
}
