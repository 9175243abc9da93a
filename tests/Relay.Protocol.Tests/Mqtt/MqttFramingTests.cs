using System.Buffers;
using Relay.Protocol.Mqtt;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>The fixed header and Remaining Length (§2.1, §1.5.5), over every fragmentation of the input.</summary>
public sealed class MqttFramingTests
{
    public static TheoryData<string> Vectors => MqttVectors.Names();

    [Theory]
    [MemberData(nameof(Vectors))]
    public void Every_split_into_two_segments_frames_and_decodes_the_same(string name)
    {
        var (bytes, version) = MqttVectors.Get(name);
        Assert.Equal(MqttDecodeError.None, MqttKit.Decode(bytes, version));
        for (var cut = 0; cut <= bytes.Length; cut++)
        {
            var sequence = TestSegment.Sequence(bytes.AsMemory(0, cut), bytes.AsMemory(cut));
            var frame = MqttKit.Frame(sequence);
            Assert.Equal(bytes.Length, frame.TotalLength);
            Assert.Equal(bytes.AsSpan(bytes.Length - frame.RemainingLength).ToArray(), frame.Body.ToArray());
            Assert.Equal(MqttDecodeError.None, MqttKit.DecodeFrame(frame, version));
        }
    }

    [Theory]
    [MemberData(nameof(Vectors))]
    public void One_byte_per_segment_frames_and_decodes(string name)
    {
        var (bytes, version) = MqttVectors.Get(name);
        Assert.Equal(MqttDecodeError.None, MqttKit.Decode(MqttKit.BytePerSegment(bytes), version));
    }

    [Theory]
    [MemberData(nameof(Vectors))]
    public void Every_strict_prefix_needs_more_data_and_leaves_the_buffer_untouched(string name)
    {
        var (bytes, _) = MqttVectors.Get(name);
        for (var length = 0; length < bytes.Length; length++)
        {
            foreach (var prefix in new[] { new ReadOnlySequence<byte>(bytes, 0, length), MqttKit.BytePerSegment(bytes[..length]) })
            {
                var buffer = prefix;
                var status = MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out _, out var error);
                Assert.Equal(OperationStatus.NeedMoreData, status);
                Assert.Equal(MqttDecodeError.None, error);
                Assert.Equal(prefix, buffer);
            }
        }
    }

    [Fact]
    public void Back_to_back_packets_are_framed_one_at_a_time()
    {
        var stream = MqttVectors.CapturedConnectV311.Concat(MqttVectors.CapturedPublishV311).Concat(MqttVectors.CapturedDisconnect).ToArray();
        var buffer = MqttKit.BytePerSegment(stream);
        var types = new List<MqttPacketType>();
        while (MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out var frame, out _) == OperationStatus.Done)
        {
            types.Add(frame.Type);
        }

        Assert.Equal([MqttPacketType.Connect, MqttPacketType.Publish, MqttPacketType.Disconnect], types);
        Assert.True(buffer.IsEmpty);
    }

    // §1.5.5: Remaining Length encodings at each byte-count boundary (the spec's Table 1-1 / 2.1 table).
    [Theory]
    [InlineData(0, "00")]
    [InlineData(127, "7f")]
    [InlineData(128, "8001")]
    [InlineData(16_383, "ff7f")]
    [InlineData(16_384, "808001")]
    [InlineData(2_097_151, "ffff7f")]
    [InlineData(2_097_152, "80808001")]
    [InlineData(268_435_455, "ffffff7f")]
    public void Remaining_length_boundaries_decode(int value, string hex)
    {
        var encoded = TestVectors.Hex(hex);
        var packet = new byte[1 + encoded.Length + value];
        packet[0] = 0x30; // PUBLISH QoS 0: any body length frames.
        encoded.CopyTo(packet, 1);
        var buffer = new ReadOnlySequence<byte>(packet);
        Assert.Equal(OperationStatus.Done, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out var frame, out _));
        Assert.Equal(value, frame.RemainingLength);
        Assert.Equal(packet.Length, frame.TotalLength);

        Span<byte> written = stackalloc byte[4];
        Assert.Equal(encoded.Length, MqttWire.WriteVariableByteInteger(written, value));
        Assert.Equal(encoded, written[..encoded.Length].ToArray());
    }

    // §1.5.5 allows reading a non-minimal encoding ([MQTT-1.5.5-1] binds only the sender): 0x80 0x00 = 0.
    [Fact]
    public void Non_minimal_remaining_length_is_accepted()
    {
        var buffer = new ReadOnlySequence<byte>([0xC0, 0x80, 0x80, 0x00]);
        Assert.Equal(OperationStatus.Done, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out var frame, out _));
        Assert.Equal(MqttPacketType.PingReq, frame.Type);
        Assert.Equal(0, frame.RemainingLength);
        Assert.Equal(4, frame.TotalLength);
    }

    // §1.5.5: "The maximum number of bytes in the Variable Byte Integer field is four"; a fifth is malformed.
    [Fact]
    public void Fifth_remaining_length_byte_is_malformed_as_soon_as_the_fourth_continues()
    {
        var buffer = new ReadOnlySequence<byte>([0x30, 0xFF, 0xFF, 0xFF, 0xFF]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out _, out var error));
        Assert.Equal(MqttDecodeError.MalformedPacket, error);
    }

    [Fact]
    public void Huge_declared_length_with_only_the_header_present_is_too_large_immediately()
    {
        // 268,435,455 declared; only 5 bytes here. Decided from the header, before any body.
        var buffer = new ReadOnlySequence<byte>([0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, 1024, out _, out var error));
        Assert.Equal(MqttDecodeError.PacketTooLarge, error);
        Assert.Equal(5, buffer.Length);
    }

    [Fact]
    public void Too_large_is_decided_from_a_partial_length_when_the_known_bytes_already_exceed_the_limit()
    {
        // 0x80 0x80 0x01… at least 16,384 whatever follows.
        var buffer = new ReadOnlySequence<byte>([0x30, 0xFF, 0xFF]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, 1024, out _, out var error));
        Assert.Equal(MqttDecodeError.PacketTooLarge, error);
    }

    [Fact]
    public void Packet_exactly_at_the_limit_is_accepted_and_one_more_byte_is_not()
    {
        var packet = new byte[100];
        packet[0] = 0x30;
        packet[1] = 98;
        var buffer = new ReadOnlySequence<byte>(packet);
        Assert.Equal(OperationStatus.Done, MqttFrameReader.TryRead(ref buffer, 100, out _, out _));
        buffer = new ReadOnlySequence<byte>(packet);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, 99, out _, out var error));
        Assert.Equal(MqttDecodeError.PacketTooLarge, error);
    }

    // §2.1.2: packet type 0 is reserved ("Forbidden").
    [Fact]
    public void Packet_type_zero_is_malformed()
    {
        var buffer = new ReadOnlySequence<byte>([0x00]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out _, out var error));
        Assert.Equal(MqttDecodeError.MalformedPacket, error);
    }

    // §2.1.3 Table 2-2, [MQTT-2.1.3-1]: reserved flags must be as listed; PUBREL/SUBSCRIBE/UNSUBSCRIBE 0010.
    [Theory]
    [InlineData(0x11)] // CONNECT 0001
    [InlineData(0x28)] // CONNACK 1000
    [InlineData(0x41)] // PUBACK 0001
    [InlineData(0x52)] // PUBREC 0010
    [InlineData(0x60)] // PUBREL 0000
    [InlineData(0x63)] // PUBREL 0011
    [InlineData(0x70 | 0x02)] // PUBCOMP 0010
    [InlineData(0x80)] // SUBSCRIBE 0000
    [InlineData(0x8A)] // SUBSCRIBE 1010
    [InlineData(0x92)] // SUBACK 0010
    [InlineData(0xA0)] // UNSUBSCRIBE 0000
    [InlineData(0xB1)] // UNSUBACK 0001
    [InlineData(0xC1)] // PINGREQ 0001
    [InlineData(0xD4)] // PINGRESP 0100
    [InlineData(0xE2)] // DISCONNECT 0010
    [InlineData(0xF1)] // AUTH 0001
    public void Wrong_reserved_flags_are_malformed_MQTT_2_1_3_1(byte first)
    {
        var buffer = new ReadOnlySequence<byte>([first, 0x00]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out _, out var error));
        Assert.Equal(MqttDecodeError.MalformedPacket, error);
    }

    [Theory]
    [InlineData(0x62)] // PUBREL
    [InlineData(0x82)] // SUBSCRIBE
    [InlineData(0xA2)] // UNSUBSCRIBE
    [InlineData(0x3D)] // PUBLISH DUP, QoS 2, RETAIN
    public void Required_flags_frame(byte first)
    {
        var buffer = new ReadOnlySequence<byte>([first, 0x00]);
        Assert.Equal(OperationStatus.Done, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out var frame, out _));
        Assert.Equal((byte)(first & 0x0F), frame.Flags);
    }

    // [MQTT-3.3.1-4]: "A PUBLISH Packet MUST NOT have both QoS bits set to 1"; decided from the first byte.
    [Fact]
    public void Publish_QoS_3_is_malformed_from_the_first_byte_MQTT_3_3_1_4()
    {
        var buffer = new ReadOnlySequence<byte>([0x36]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out _, out var error));
        Assert.Equal(MqttDecodeError.MalformedPacket, error);
    }

    // §3.12 / §3.13: PINGREQ and PINGRESP have no variable header and no payload.
    [Fact]
    public void Ping_with_a_body_is_malformed()
    {
        var buffer = new ReadOnlySequence<byte>([0xC0, 0x01, 0x00]);
        Assert.Equal(OperationStatus.InvalidData, MqttFrameReader.TryRead(ref buffer, MqttKit.Unlimited, out _, out var error));
        Assert.Equal(MqttDecodeError.MalformedPacket, error);
    }
}
