using System.Buffers.Binary;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// The few MQTT 3.1.1 packets the load generator sends and reads (OASIS MQTT 3.1.1 §2, §3); independent of
/// the server's codec on purpose (<see cref="StunWire"/> says why).
/// </summary>
internal static class MqttWire
{
    /// <summary>
    /// §3.1 CONNECT, protocol level 4; user name and password when given. Clean session by default; with
    /// <paramref name="cleanSession"/> false the session (subscriptions, queued QoS 1 messages) outlives the
    /// connection [MQTT-3.1.2-4].
    /// </summary>
    public static byte[] Connect(string clientId, ushort keepAlive, string? user = null, string? password = null, bool cleanSession = true)
    {
        var body = new List<byte>();
        String(body, "MQTT");
        body.Add(4);
        body.Add((byte)((cleanSession ? 0x02 : 0) | (user is null ? 0 : 0x80) | (password is null ? 0 : 0x40)));
        body.Add((byte)(keepAlive >> 8));
        body.Add((byte)keepAlive);
        String(body, clientId);
        if (user is not null)
        {
            String(body, user);
        }

        if (password is not null)
        {
            String(body, password);
        }

        return Frame(0x10, body);
    }

    /// <summary>§3.8 SUBSCRIBE (fixed header flags 0b0010 [MQTT-3.8.1-1]) of one filter.</summary>
    public static byte[] Subscribe(ushort packetId, string filter, int qos)
    {
        var body = new List<byte> { (byte)(packetId >> 8), (byte)packetId };
        String(body, filter);
        body.Add((byte)qos);
        return Frame(0x82, body);
    }

    /// <summary>§3.8 SUBSCRIBE of several filters at one QoS; the SUBACK has one return code per filter, in order [MQTT-3.9.3-1].</summary>
    public static byte[] Subscribe(ushort packetId, int qos, params string[] filters)
    {
        var body = new List<byte> { (byte)(packetId >> 8), (byte)packetId };
        foreach (var filter in filters)
        {
            String(body, filter);
            body.Add((byte)qos);
        }

        return Frame(0x82, body);
    }

    /// <summary>§3.3 PUBLISH header + topic (+ packet id at QoS 1) for a payload of <paramref name="payloadLength"/> bytes.</summary>
    public static int WritePublishHeader(Span<byte> destination, ReadOnlySpan<byte> topic, int qos, ushort packetId, int payloadLength)
    {
        var remaining = 2 + topic.Length + (qos > 0 ? 2 : 0) + payloadLength;
        var n = 0;
        destination[n++] = (byte)(0x30 | (qos << 1));
        n += WriteLength(destination[n..], remaining);
        BinaryPrimitives.WriteUInt16BigEndian(destination[n..], (ushort)topic.Length);
        n += 2;
        topic.CopyTo(destination[n..]);
        n += topic.Length;
        if (qos > 0)
        {
            BinaryPrimitives.WriteUInt16BigEndian(destination[n..], packetId);
            n += 2;
        }

        return n;
    }

    /// <summary>
    /// One complete packet at the start of <paramref name="buffer"/>: (type byte, header length, remaining
    /// length), or false when more bytes are needed. §2.2.3: at most four length bytes; a fifth is malformed.
    /// </summary>
    public static bool TryReadPacket(ReadOnlySpan<byte> buffer, out byte type, out int headerLength, out int remaining, out bool malformed)
    {
        type = 0;
        headerLength = 0;
        remaining = 0;
        malformed = false;
        if (buffer.Length < 2)
        {
            return false;
        }

        var multiplier = 1;
        for (var i = 1; i <= 4; i++)
        {
            if (i >= buffer.Length)
            {
                return false;
            }

            remaining += (buffer[i] & 0x7F) * multiplier;
            if ((buffer[i] & 0x80) == 0)
            {
                headerLength = i + 1;
                type = buffer[0];
                return buffer.Length >= headerLength + remaining;
            }

            multiplier *= 128;
        }

        malformed = true;
        return false;
    }

    private static int WriteLength(Span<byte> destination, int length)
    {
        var n = 0;
        do
        {
            var digit = (byte)(length % 128);
            length /= 128;
            destination[n++] = length > 0 ? (byte)(digit | 0x80) : digit;
        }
        while (length > 0);
        return n;
    }

    private static void String(List<byte> body, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        body.Add((byte)(bytes.Length >> 8));
        body.Add((byte)bytes.Length);
        body.AddRange(bytes);
    }

    private static byte[] Frame(byte first, List<byte> body)
    {
        Span<byte> length = stackalloc byte[4];
        var n = WriteLength(length, body.Count);
        var packet = new byte[1 + n + body.Count];
        packet[0] = first;
        length[..n].CopyTo(packet.AsSpan(1));
        body.CopyTo(packet, 1 + n);
        return packet;
    }
}
