using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Writes MQTT data representations (§1.5) into a span sized by the matching Measure* call, and measures
/// them. Strings are encoded straight from UTF-16 into the destination: no intermediate array.
/// </summary>
internal ref struct MqttSpanWriter
{
    private readonly Span<byte> _destination;

    public MqttSpanWriter(Span<byte> destination)
    {
        _destination = destination;
        Position = 0;
    }

    public int Position { get; private set; }

    public void Byte(byte value) => _destination[Position++] = value;

    public void UInt16(ushort value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(_destination[Position..], value);
        Position += 2;
    }

    public void UInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_destination[Position..], value);
        Position += 4;
    }

    public void VariableByteInteger(int value) => Position += MqttWire.WriteVariableByteInteger(_destination[Position..], value);

    public void Bytes(scoped ReadOnlySpan<byte> value)
    {
        value.CopyTo(_destination[Position..]);
        Position += value.Length;
    }

    public void Bytes(in ReadOnlySequence<byte> value)
    {
        value.CopyTo(_destination[Position..]);
        Position += (int)value.Length;
    }

    /// <summary>Binary Data (§1.5.6): Two Byte Integer length, then the bytes.</summary>
    public void Binary(scoped ReadOnlySpan<byte> value)
    {
        UInt16((ushort)value.Length);
        Bytes(value);
    }

    /// <summary>UTF-8 Encoded String (§1.5.4): Two Byte Integer length, then the UTF-8 bytes.</summary>
    public void String(string value)
    {
        var length = Encoding.UTF8.GetBytes(value, _destination[(Position + 2)..]);
        UInt16((ushort)length);
        Position += length;
    }

    public void ByteProperty(byte id, byte value)
    {
        Byte(id);
        Byte(value);
    }

    public void UInt16Property(byte id, ushort value)
    {
        Byte(id);
        UInt16(value);
    }

    public void UInt32Property(byte id, uint value)
    {
        Byte(id);
        UInt32(value);
    }

    public void StringProperty(byte id, string value)
    {
        Byte(id);
        String(value);
    }

    public void UserProperties(IReadOnlyList<KeyValuePair<string, string>>? pairs)
    {
        if (pairs is null)
        {
            return;
        }

        for (var i = 0; i < pairs.Count; i++)
        {
            Byte(0x26);
            String(pairs[i].Key);
            String(pairs[i].Value);
        }
    }

    /// <summary>The fixed header (§2.1): type and flags, then the Remaining Length; returns nothing, advances.</summary>
    public void FixedHeader(MqttPacketType type, byte flags, int remainingLength)
    {
        Byte((byte)(((int)type << 4) | flags));
        VariableByteInteger(remainingLength);
    }

    // ----- measuring -----

    /// <summary>Bytes of a UTF-8 Encoded String with its length prefix; a string over 65,535 bytes is a caller bug.</summary>
    public static int StringSize(string value)
    {
        var length = Encoding.UTF8.GetByteCount(value);
        if (length > MqttTopic.MaxLength)
        {
            ThrowTooLong(nameof(value));
        }

        return 2 + length;
    }

    /// <summary>Bytes of Binary Data with its length prefix.</summary>
    public static int BinarySize(int length)
    {
        if (length > MqttTopic.MaxLength)
        {
            ThrowTooLong(nameof(length));
        }

        return 2 + length;
    }

    public static int UserPropertiesSize(IReadOnlyList<KeyValuePair<string, string>>? pairs)
    {
        if (pairs is null)
        {
            return 0;
        }

        var size = 0;
        for (var i = 0; i < pairs.Count; i++)
        {
            size += 1 + StringSize(pairs[i].Key) + StringSize(pairs[i].Value);
        }

        return size;
    }

    /// <summary>Total packet size for a body of <paramref name="remainingLength"/> bytes; rejects what a Remaining Length cannot express.</summary>
    public static int PacketSize(long remainingLength)
    {
        if (remainingLength > MqttFrameReader.MaxRemainingLength)
        {
            ThrowPacketTooLarge();
        }

        return 1 + MqttWire.VariableByteIntegerSize((int)remainingLength) + (int)remainingLength;
    }

    [DoesNotReturn]
    public static void ThrowTooLong(string name) => throw new ArgumentException("An MQTT string or binary field holds at most 65,535 bytes (§1.5.4, §1.5.6).", name);

    [DoesNotReturn]
    public static void ThrowPacketTooLarge() => throw new ArgumentException("An MQTT packet's Remaining Length is at most 268,435,455 bytes (§1.5.5, §2.1.4).");

    [DoesNotReturn]
    public static void ThrowArgument(string message, string name) => throw new ArgumentException(message, name);
}
