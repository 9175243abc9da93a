using System.Buffers;

namespace Relay.Protocol.Mqtt;

/// <summary>Frames MQTT Control Packets out of a byte stream (§2.1 fixed header, §1.5.5 Variable Byte Integer).</summary>
public static class MqttFrameReader
{
    /// <summary>The largest Remaining Length a 4-byte Variable Byte Integer can carry (§1.5.5): 268,435,455.</summary>
    public const int MaxRemainingLength = 268_435_455;

    /// <summary>
    /// Reads one packet. Done: <paramref name="buffer"/> is advanced past the frame. NeedMoreData: the buffer
    /// is untouched (it is a strict prefix of a packet). InvalidData: <paramref name="error"/> says why.
    /// </summary>
    /// <param name="buffer">Received bytes; on Done, what follows the packet.</param>
    /// <param name="maxPacketSize">The largest whole packet (fixed header included) accepted; checked from the header alone.</param>
    /// <param name="frame">On Done, the packet.</param>
    /// <param name="error">Why the status is InvalidData; <see cref="MqttDecodeError.None"/> otherwise.</param>
    public static OperationStatus TryRead(ref ReadOnlySequence<byte> buffer, int maxPacketSize, out MqttFrame frame, out MqttDecodeError error)
        => throw new NotImplementedException();
}
