using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// One framed MQTT Control Packet: the fixed header (§2.1) and a view of the variable header plus payload.
/// </summary>
/// <remarks><see cref="Body"/> is a view of the caller's buffer, valid until the caller's <c>AdvanceTo</c>.</remarks>
public readonly struct MqttFrame
{
    internal MqttFrame(MqttPacketType type, byte flags, int remainingLength, int totalLength, ReadOnlySequence<byte> body)
    {
        Type = type;
        Flags = flags;
        RemainingLength = remainingLength;
        TotalLength = totalLength;
        Body = body;
    }

    /// <summary>The packet type, bits 7-4 of byte 1 (§2.1.2).</summary>
    public MqttPacketType Type { get; }

    /// <summary>The flags, bits 3-0 of byte 1 (§2.1.3).</summary>
    public byte Flags { get; }

    /// <summary>The Remaining Length: bytes of variable header plus payload (§2.1.4).</summary>
    public int RemainingLength { get; }

    /// <summary>The whole packet's length: fixed header (2 to 5 bytes) plus <see cref="RemainingLength"/>.</summary>
    public int TotalLength { get; }

    /// <summary>Variable header and payload: exactly <see cref="RemainingLength"/> bytes.</summary>
    public ReadOnlySequence<byte> Body { get; }
}
