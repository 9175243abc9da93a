using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace Relay.Server.Connectors;

/// <summary>
/// One message in a connector's spill file. Our own format (there is no standard to cite), written and read
/// only by this server, but read back after a crash, so a torn or damaged record must be told from a good one:
/// <code>
///   record := length:u32be  crc:u32be  body[length]          crc = CRC-32 (IEEE) of body
///   body   := version:u8 (1)  qos:u8 (0..2)  flags:u8 (bit 0 retain, others 0)
///             receivedAt:i64be (Unix milliseconds)
///             clientIdLength:u16be  clientId (UTF-8)
///             topicLength:u16be  topic (UTF-8)
///             payload (the rest of body)
/// </code>
/// Pure: no I/O. The reader checks the declared length against the caller's limit before it looks further.
/// </summary>
internal static class ConnectorSpillRecord
{
    public const int HeaderLength = 8;
    public const byte Version = 1;

    /// <summary>The smallest body: fixed fields and two empty strings.</summary>
    public const int MinBodyLength = 1 + 1 + 1 + 8 + 2 + 2;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Bytes <paramref name="message"/> takes as a record, header included.</summary>
    public static int Length(ConnectorMessage message) =>
        HeaderLength + MinBodyLength + Encoding.UTF8.GetByteCount(message.ClientId) + Encoding.UTF8.GetByteCount(message.Topic) + message.Payload.Length;

    /// <summary>Writes <paramref name="message"/> as one record. Client id and topic are MQTT strings, so each fits a u16 length.</summary>
    public static void Write(IBufferWriter<byte> output, ConnectorMessage message)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(message);
        var clientIdLength = Encoding.UTF8.GetByteCount(message.ClientId);
        var topicLength = Encoding.UTF8.GetByteCount(message.Topic);
        if (clientIdLength > ushort.MaxValue || topicLength > ushort.MaxValue)
        {
            throw new ArgumentException("client id or topic longer than an MQTT string", nameof(message));
        }

        var bodyLength = MinBodyLength + clientIdLength + topicLength + message.Payload.Length;
        var span = output.GetSpan(HeaderLength + bodyLength);
        var body = span.Slice(HeaderLength, bodyLength);
        body[0] = Version;
        body[1] = message.QoS;
        body[2] = message.Retain ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteInt64BigEndian(body[3..], message.ReceivedAt.ToUnixTimeMilliseconds());
        var at = 11;
        BinaryPrimitives.WriteUInt16BigEndian(body[at..], (ushort)clientIdLength);
        at += 2 + Encoding.UTF8.GetBytes(message.ClientId, body[(at + 2)..]);
        BinaryPrimitives.WriteUInt16BigEndian(body[at..], (ushort)topicLength);
        at += 2 + Encoding.UTF8.GetBytes(message.Topic, body[(at + 2)..]);
        message.Payload.Span.CopyTo(body[at..]);
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)bodyLength);
        BinaryPrimitives.WriteUInt32BigEndian(span[4..], Crc32.HashToUInt32(body));
        output.Advance(HeaderLength + bodyLength);
    }

    /// <summary>
    /// Reads the body length from a record's header; <see cref="OperationStatus.InvalidData"/> when it is below the
    /// minimum or above <paramref name="maxBodyLength"/> (checked before the caller reads or allocates the body).
    /// </summary>
    public static OperationStatus TryReadHeader(ReadOnlySpan<byte> input, int maxBodyLength, out int bodyLength)
    {
        bodyLength = 0;
        if (input.Length < HeaderLength)
        {
            return OperationStatus.NeedMoreData;
        }

        var declared = BinaryPrimitives.ReadUInt32BigEndian(input);
        if (declared < MinBodyLength || declared > (uint)maxBodyLength)
        {
            return OperationStatus.InvalidData;
        }

        bodyLength = (int)declared;
        return OperationStatus.Done;
    }

    /// <summary>
    /// Reads one record from the start of <paramref name="input"/>. <see cref="OperationStatus.NeedMoreData"/> for
    /// a strict prefix of a record; <see cref="OperationStatus.InvalidData"/> for a length out of range, a CRC that
    /// does not match, or fields that do not add up. <paramref name="consumed"/> is set only on Done.
    /// </summary>
    public static OperationStatus TryRead(ReadOnlySpan<byte> input, int maxBodyLength, out ConnectorMessage? message, out int consumed)
    {
        message = null;
        consumed = 0;
        var header = TryReadHeader(input, maxBodyLength, out var bodyLength);
        if (header != OperationStatus.Done)
        {
            return header;
        }

        if (input.Length - HeaderLength < bodyLength)
        {
            return OperationStatus.NeedMoreData;
        }

        var body = input.Slice(HeaderLength, bodyLength);
        if (Crc32.HashToUInt32(body) != BinaryPrimitives.ReadUInt32BigEndian(input[4..]))
        {
            return OperationStatus.InvalidData;
        }

        if (body[0] != Version || body[1] > 2 || (body[2] & ~1) != 0)
        {
            return OperationStatus.InvalidData;
        }

        var receivedAt = BinaryPrimitives.ReadInt64BigEndian(body[3..]);
        if (receivedAt is < -62_135_596_800_000 or > 253_402_300_799_999)
        {
            return OperationStatus.InvalidData;
        }

        var rest = body[11..];
        if (!TryTakeString(ref rest, out var clientId) || !TryTakeString(ref rest, out var topic))
        {
            return OperationStatus.InvalidData;
        }

        message = new ConnectorMessage(clientId, topic, rest.ToArray(), body[1], body[2] == 1, DateTimeOffset.FromUnixTimeMilliseconds(receivedAt));
        consumed = HeaderLength + bodyLength;
        return OperationStatus.Done;
    }

    private static bool TryTakeString(ref ReadOnlySpan<byte> rest, out string value)
    {
        value = string.Empty;
        if (rest.Length < 2)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadUInt16BigEndian(rest);
        if (rest.Length - 2 < length)
        {
            return false;
        }

        try
        {
            value = StrictUtf8.GetString(rest.Slice(2, length));
        }
        catch (DecoderFallbackException)
        {
            return false;
        }

        rest = rest[(2 + length)..];
        return true;
    }
}
