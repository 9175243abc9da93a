using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Relay.Server.Mqtt.Storage;

/// <summary>
/// The <c>properties</c> column: MQTT 5 message properties (MQTT 5.0 §3.3.2.3) in a tiny binary
/// format, so most rows (no properties) store NULL and the rest a few bytes.
/// <code>
/// version (1) = 1 | present flags (1) | [payload format (1)] | [content type: str] | [response topic: str]
/// | [correlation data: len32 + bytes] | [user properties: count32 + (str, str)*]      str = len32 + UTF-8
/// </code>
/// Only this build writes it, but the reader still checks every length against what is left, so a
/// damaged row is reported instead of read past its end.
/// </summary>
internal static class MqttPropertiesCodec
{
    private const byte Version = 1;
    private const byte HasPayloadFormat = 1;
    private const byte HasContentType = 2;
    private const byte HasResponseTopic = 4;
    private const byte HasCorrelationData = 8;
    private const byte HasUserProperties = 16;

    /// <summary>Null when there is nothing worth storing.</summary>
    public static byte[]? Encode(MqttMessageProperties? properties)
    {
        if (properties is null)
        {
            return null;
        }

        byte flags = 0;
        flags |= properties.PayloadFormatIndicator.HasValue ? HasPayloadFormat : (byte)0;
        flags |= properties.ContentType is not null ? HasContentType : (byte)0;
        flags |= properties.ResponseTopic is not null ? HasResponseTopic : (byte)0;
        flags |= properties.CorrelationData.HasValue ? HasCorrelationData : (byte)0;
        flags |= properties.UserProperties is { Count: > 0 } ? HasUserProperties : (byte)0;
        if (flags == 0)
        {
            return null;
        }

        var buffer = new ArrayBufferWriter<byte>(64);
        buffer.Write([Version, flags]);
        if (properties.PayloadFormatIndicator is { } format)
        {
            buffer.Write([format]);
        }

        if (properties.ContentType is { } contentType)
        {
            WriteString(buffer, contentType);
        }

        if (properties.ResponseTopic is { } responseTopic)
        {
            WriteString(buffer, responseTopic);
        }

        if (properties.CorrelationData is { } correlation)
        {
            WriteLength(buffer, correlation.Length);
            buffer.Write(correlation.Span);
        }

        if (properties.UserProperties is { Count: > 0 } user)
        {
            WriteLength(buffer, user.Count);
            foreach (var (key, value) in user)
            {
                WriteString(buffer, key);
                WriteString(buffer, value);
            }
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Decodes a column value; false when it is damaged.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> data, out MqttMessageProperties? properties)
    {
        properties = null;
        if (data.IsEmpty)
        {
            return true;
        }

        if (data.Length < 2 || data[0] != Version)
        {
            return false;
        }

        var flags = data[1];
        data = data[2..];
        byte? format = null;
        string? contentType = null;
        string? responseTopic = null;
        byte[]? correlation = null;
        List<KeyValuePair<string, string>>? user = null;
        if ((flags & HasPayloadFormat) != 0)
        {
            if (data.IsEmpty)
            {
                return false;
            }

            format = data[0];
            data = data[1..];
        }

        if ((flags & HasContentType) != 0 && !TryReadString(ref data, out contentType))
        {
            return false;
        }

        if ((flags & HasResponseTopic) != 0 && !TryReadString(ref data, out responseTopic))
        {
            return false;
        }

        if ((flags & HasCorrelationData) != 0)
        {
            if (!TryReadLength(ref data, out var length))
            {
                return false;
            }

            correlation = data[..length].ToArray();
            data = data[length..];
        }

        if ((flags & HasUserProperties) != 0)
        {
            if (data.Length < 4)
            {
                return false;
            }

            var count = BinaryPrimitives.ReadInt32LittleEndian(data);
            data = data[4..];
            // Each pair takes at least 8 bytes, which bounds the list by the bytes actually present.
            if (count < 0 || count > data.Length / 8)
            {
                return false;
            }

            user = new List<KeyValuePair<string, string>>(count);
            for (var i = 0; i < count; i++)
            {
                if (!TryReadString(ref data, out var key) || !TryReadString(ref data, out var value))
                {
                    return false;
                }

                user.Add(new(key!, value!));
            }
        }

        if (!data.IsEmpty)
        {
            return false;
        }

        properties = new MqttMessageProperties(format, contentType, responseTopic, correlation, user);
        return true;
    }

    private static void WriteLength(ArrayBufferWriter<byte> buffer, int length)
    {
        BinaryPrimitives.WriteInt32LittleEndian(buffer.GetSpan(4), length);
        buffer.Advance(4);
    }

    private static void WriteString(ArrayBufferWriter<byte> buffer, string value)
    {
        var length = Encoding.UTF8.GetByteCount(value);
        WriteLength(buffer, length);
        Encoding.UTF8.GetBytes(value, buffer.GetSpan(length));
        buffer.Advance(length);
    }

    private static bool TryReadLength(ref ReadOnlySpan<byte> data, out int length)
    {
        length = 0;
        if (data.Length < 4)
        {
            return false;
        }

        length = BinaryPrimitives.ReadInt32LittleEndian(data);
        data = data[4..];
        return length >= 0 && length <= data.Length;
    }

    private static bool TryReadString(ref ReadOnlySpan<byte> data, out string? value)
    {
        value = null;
        if (!TryReadLength(ref data, out var length))
        {
            return false;
        }

        value = Encoding.UTF8.GetString(data[..length]);
        data = data[length..];
        return true;
    }
}
