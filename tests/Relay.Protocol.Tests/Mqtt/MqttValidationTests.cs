using Relay.Protocol.Mqtt;
using static Relay.Protocol.Mqtt.MqttDecodeError;
using V = Relay.Protocol.Mqtt.MqttProtocolVersion;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>
/// Every validation rule, one hand-written packet each, with the normative statement (or section) it
/// enforces as the first argument. Each packet is checked contiguous and one byte per segment, so the
/// multi-segment paths (UTF-8 across segments, split filters) give the same answer.
/// </summary>
public sealed class MqttValidationTests
{
    private static void Check(MqttDecodeError expected, string hex, V version)
    {
        var bytes = TestVectors.Hex(hex);
        Assert.Equal(expected, MqttKit.Decode(bytes, version));
        Assert.Equal(expected, MqttKit.Decode(MqttKit.BytePerSegment(bytes), version));
    }

    [Theory]
    [InlineData("baseline", None, "10 0e 0004 4d515454 04 02 003c 0002 6331", V.V311)]
    [InlineData("[MQTT-3.1.2-3] reserved connect flag", MalformedPacket, "10 0e 0004 4d515454 04 03 003c 0002 6331", V.V311)]
    [InlineData("[MQTT-3.1.2-3] reserved connect flag v5", MalformedPacket, "10 0f 0004 4d515454 05 03 003c 00 0002 6331", V.V500)]
    [InlineData("v3.1.1 [MQTT-3.1.2-13] / v5 [MQTT-3.1.2-11] Will QoS without will", MalformedPacket, "10 0e 0004 4d515454 04 0a 003c 0002 6331", V.V311)]
    [InlineData("v3.1.1 [MQTT-3.1.2-15] / v5 [MQTT-3.1.2-13] Will Retain without will", MalformedPacket, "10 0e 0004 4d515454 04 22 003c 0002 6331", V.V311)]
    [InlineData("v5 [MQTT-3.1.2-11] Will QoS without will", MalformedPacket, "10 0f 0004 4d515454 05 12 003c 00 0002 6331", V.V500)]
    [InlineData("v3.1.1 [MQTT-3.1.2-14] / v5 [MQTT-3.1.2-12] Will QoS 3", MalformedPacket, "10 13 0004 4d515454 04 1e 003c 0002 6331 0001 61 0000", V.V311)]
    [InlineData("[MQTT-3.1.2-22] password without user name (3.1.1)", MalformedPacket, "10 11 0004 4d515454 04 42 003c 0002 6331 0001 78", V.V311)]
    [InlineData("§3.1.2.9 v5 allows a password without user name", None, "10 12 0004 4d515454 05 42 003c 00 0002 6331 0001 78", V.V500)]
    [InlineData("[MQTT-3.1.2-1] protocol name", UnsupportedProtocolVersion, "10 0e 0004 4d515458 04 02 003c 0002 6331", V.V311)]
    [InlineData("[MQTT-3.1.2-2] unknown level", UnsupportedProtocolVersion, "10 0e 0004 4d515454 06 02 003c 0002 6331", V.V311)]
    [InlineData("[MQTT-3.1.2-2] MQTT with level 3", UnsupportedProtocolVersion, "10 0e 0004 4d515454 03 02 003c 0002 6331", V.V311)]
    [InlineData("[MQTT-3.1.2-2] MQIsdp with level 4", UnsupportedProtocolVersion, "10 10 0006 4d5149736470 04 02 000a 0002 6331", V.V311)]
    [InlineData("[MQTT-3.1.3-8] empty client id with clean session 0", ClientIdentifierNotValid, "10 0c 0004 4d515454 04 00 003c 0000", V.V311)]
    [InlineData("[MQTT-3.1.3-6] empty client id with clean session 1", None, "10 0c 0004 4d515454 04 02 003c 0000", V.V311)]
    [InlineData("§3.1.3.1 v5 empty client id, clean start 0 (server assigns)", None, "10 0d 0004 4d515454 05 00 003c 00 0000", V.V500)]
    [InlineData("MQTT 3.1: client id of 1-23 characters", ClientIdentifierNotValid, "10 0e 0006 4d5149736470 03 02 000a 0000", V.V310)]
    [InlineData("§4.13 trailing bytes", MalformedPacket, "10 0f 0004 4d515454 04 02 003c 0002 6331 00", V.V311)]
    [InlineData("truncated body", MalformedPacket, "10 0d 0004 4d515454 04 02 003c 0002 63", V.V311)]
    [InlineData("[MQTT-1.5.4-1] ill-formed UTF-8 client id", InvalidUtf8, "10 0e 0004 4d515454 04 02 003c 0002 c328", V.V311)]
    [InlineData("[MQTT-1.5.4-1] UTF-8 encoded surrogate U+D800", InvalidUtf8, "10 0f 0004 4d515454 04 02 003c 0003 eda080", V.V311)]
    [InlineData("[MQTT-1.5.4-1] overlong encoding", InvalidUtf8, "10 0e 0004 4d515454 04 02 003c 0002 c0af", V.V311)]
    [InlineData("[MQTT-1.5.4-2] U+0000 in client id", InvalidUtf8, "10 0e 0004 4d515454 04 02 003c 0002 6100", V.V311)]
    [InlineData("four-byte UTF-8 is fine", None, "10 10 0004 4d515454 04 02 003c 0004 f09f9880", V.V311)]
    [InlineData("[MQTT-3.1.3-11] will topic is a topic name", TopicNameInvalid, "10 15 0004 4d515454 04 06 003c 0002 6331 0003 612f23 0000", V.V311)]
    [InlineData("will with topic and payload", None, "10 15 0004 4d515454 04 06 003c 0002 6331 0003 612f62 0000", V.V311)]
    [InlineData("§2.2.2.2 Will Delay Interval in CONNECT properties is not valid there", MalformedPacket, "10 14 0004 4d515454 05 02 003c 05 1800000001 0002 6331", V.V500)]
    [InlineData("§3.1.2.11.3 Receive Maximum 0", ProtocolError, "10 12 0004 4d515454 05 02 003c 03 210000 0002 6331", V.V500)]
    [InlineData("§3.1.2.11.4 Maximum Packet Size 0", ProtocolError, "10 14 0004 4d515454 05 02 003c 05 2700000000 0002 6331", V.V500)]
    [InlineData("§3.1.2.11.7 Request Problem Information 2", ProtocolError, "10 11 0004 4d515454 05 02 003c 02 1702 0002 6331", V.V500)]
    [InlineData("§3.1.2.11.2 Session Expiry Interval twice", ProtocolError, "10 19 0004 4d515454 05 02 003c 0a 110000000a 110000000a 0002 6331", V.V500)]
    [InlineData("§3.1.3.2 Will Delay Interval in Will Properties", None, "10 1a 0004 4d515454 05 06 003c 00 0002 6331 05 1800000001 0001 61 0000", V.V500)]
    [InlineData("§2.2.2.2 Session Expiry in Will Properties is not valid there", MalformedPacket, "10 1a 0004 4d515454 05 06 003c 00 0002 6331 05 1100000001 0001 61 0000", V.V500)]
    [InlineData("§3.1.2.11.10 Authentication Data without Authentication Method", ProtocolError, "10 12 0004 4d515454 05 02 003c 03 160000 0002 6331", V.V500)]
    [InlineData("§3.1.2.11.9 Authentication Method and Data", None, "10 17 0004 4d515454 05 02 003c 08 150002 6b72 160000 0002 6331", V.V500)]
    public void Connect(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    [Theory]
    [InlineData("baseline", None, "30 05 0001 61 00 78", V.V500)]
    [InlineData("[MQTT-3.3.1-2] DUP with QoS 0 (v5)", MalformedPacket, "38 05 0001 61 00 78", V.V500)]
    [InlineData("[MQTT-3.3.1-2] DUP with QoS 0 tolerated in 3.1.1", None, "38 04 0001 61 78", V.V311)]
    [InlineData("[MQTT-3.3.1-4] QoS 3", MalformedPacket, "36 06 0001 61 0001 00", V.V500)]
    [InlineData("[MQTT-3.3.2-2] '+' in topic name", TopicNameInvalid, "30 04 0001 2b 78", V.V311)]
    [InlineData("[MQTT-3.3.2-2] '#' in topic name", TopicNameInvalid, "30 06 0003 612f23 00", V.V500)]
    [InlineData("[MQTT-2.3.1-1] packet id 0 with QoS 1", ProtocolError, "32 05 0001 61 0000", V.V311)]
    [InlineData("[MQTT-2.2.1-3] packet id 0 with QoS 2", ProtocolError, "34 06 0001 61 0000 00", V.V500)]
    [InlineData("[MQTT-4.7.3-1] empty topic (3.1.1)", TopicNameInvalid, "30 03 0000 78", V.V311)]
    [InlineData("§3.3.2.1 empty topic without alias (v5)", ProtocolError, "30 04 0000 00 78", V.V500)]
    [InlineData("§3.3.2.3.4 empty topic with alias (v5)", None, "30 07 0000 03 230001 78", V.V500)]
    [InlineData("§3.3.2.3.2 Payload Format Indicator twice", ProtocolError, "30 08 0001 61 04 0100 0100", V.V500)]
    [InlineData("§2.2.2.2 Session Expiry not valid in PUBLISH", MalformedPacket, "30 09 0001 61 05 110000003c", V.V500)]
    [InlineData("§2.2.2.2 unknown property identifier 0x04", MalformedPacket, "30 06 0001 61 02 0400", V.V500)]
    [InlineData("§3.3.2.3.2 Payload Format Indicator 2", ProtocolError, "30 06 0001 61 02 0102", V.V500)]
    [InlineData("§3.3.2.3.8 Subscription Identifier 0", ProtocolError, "30 06 0001 61 02 0b00", V.V500)]
    [InlineData("§3.3.2.3.8 several Subscription Identifiers are fine", None, "30 08 0001 61 04 0b01 0b02", V.V500)]
    [InlineData("[MQTT-3.3.2-14] Response Topic with a wildcard", ProtocolError, "30 09 0001 61 05 08 0002 612b", V.V500)]
    [InlineData("§2.2.2.1 property length beyond the body", MalformedPacket, "30 05 0001 61 05 01", V.V500)]
    [InlineData("§1.5.7 [MQTT-1.5.4-1] user property name not UTF-8", InvalidUtf8, "30 0b 0001 61 07 26 0001 ff 0001 61", V.V500)]
    [InlineData("topic not UTF-8", InvalidUtf8, "30 04 0001 80 78", V.V311)]
    [InlineData("topic length beyond the body", MalformedPacket, "30 03 0005 61", V.V311)]
    public void Publish(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    [Theory]
    [InlineData("baseline 3.1.1", None, "40 02 0001", V.V311)]
    [InlineData("[MQTT-2.3.1-1] packet id 0", ProtocolError, "40 02 0000", V.V311)]
    [InlineData("§3.4 3.1.1 PUBACK is exactly 2 bytes", MalformedPacket, "40 03 0001 00", V.V311)]
    [InlineData("§3.4.2.1 v5 reason code 0x92 not valid in PUBACK", ProtocolError, "40 03 0001 92", V.V500)]
    [InlineData("§3.6.2.1 v5 reason code 0x10 not valid in PUBREL", ProtocolError, "62 03 0001 10", V.V500)]
    [InlineData("§3.6.2.1 v5 PUBREL Packet Identifier not found", None, "62 03 0001 92", V.V500)]
    [InlineData("§3.4.2.2 v5 PUBACK with Reason String", None, "40 08 0001 00 04 1f 0001 78", V.V500)]
    [InlineData("§2.2.2.2 Session Expiry not valid in PUBACK", MalformedPacket, "40 09 0001 00 05 110000000a", V.V500)]
    [InlineData("§3.4.2.2.2 Reason String twice", ProtocolError, "40 0c 0001 00 08 1f000178 1f000178", V.V500)]
    [InlineData("§3.5 PUBREC, §3.7 PUBCOMP", None, "50 02 0001", V.V500)]
    [InlineData("§3.7 PUBCOMP", None, "70 03 0001 92", V.V500)]
    public void Acks(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    [Theory]
    [InlineData("baseline", None, "82 06 0001 0001 61 00", V.V311)]
    [InlineData("3.1.1 [MQTT-3.8.3-3] no topic filter", ProtocolError, "82 02 0001", V.V311)]
    [InlineData("v5 [MQTT-3.8.3-2] no topic filter", ProtocolError, "82 03 0001 00", V.V500)]
    [InlineData("[MQTT-2.3.1-1] packet id 0", ProtocolError, "82 06 0000 0001 61 00", V.V311)]
    [InlineData("3.1.1 [MQTT-3-8.3-4] reserved option bits", MalformedPacket, "82 06 0001 0001 61 04", V.V311)]
    [InlineData("3.1.1 [MQTT-3-8.3-4] QoS 3", MalformedPacket, "82 06 0001 0001 61 03", V.V311)]
    [InlineData("v5 [MQTT-3.8.3-5] reserved option bits 6-7", MalformedPacket, "82 07 0001 00 0001 61 40", V.V500)]
    [InlineData("v5 §3.8.3.1 QoS 3", MalformedPacket, "82 07 0001 00 0001 61 03", V.V500)]
    [InlineData("v5 §3.8.3.1 Retain Handling 3", ProtocolError, "82 07 0001 00 0001 61 30", V.V500)]
    [InlineData("v5 No Local, RAP, Retain Handling 2", None, "82 07 0001 00 0001 61 2e", V.V500)]
    [InlineData("v5 [MQTT-3.8.3-4] No Local on a shared subscription", ProtocolError, "82 10 0001 00 000a 247368617265 2f672f61 04", V.V500)]
    [InlineData("v5 shared subscription", None, "82 10 0001 00 000a 247368617265 2f672f61 01", V.V500)]
    [InlineData("[MQTT-4.8.2-1] empty share name", TopicFilterInvalid, "82 0f 0001 00 0009 247368617265 2f2f61 01", V.V500)]
    [InlineData("§4.8.2 share without a filter", TopicFilterInvalid, "82 0e 0001 00 0008 247368617265 2f67 01", V.V500)]
    [InlineData("[MQTT-4.7.1-1] '#' not last", TopicFilterInvalid, "82 0a 0001 0005 612f232f62 00", V.V311)]
    [InlineData("[MQTT-4.7.1-2] '+' not alone in its level", TopicFilterInvalid, "82 07 0001 0002 612b 00", V.V311)]
    [InlineData("[MQTT-4.7.1-1] '#' not alone in its level", TopicFilterInvalid, "82 07 0001 0002 2361 00", V.V311)]
    [InlineData("[MQTT-4.7.3-1] empty filter", TopicFilterInvalid, "82 05 0001 0000 00", V.V311)]
    [InlineData("missing options byte", MalformedPacket, "82 05 0001 0001 61", V.V311)]
    [InlineData("§3.8.2.1.2 Subscription Identifier twice", ProtocolError, "82 0b 0001 04 0b01 0b02 0001 61 00", V.V500)]
    [InlineData("§2.2.2.2 Topic Alias not valid in SUBSCRIBE", MalformedPacket, "82 0a 0001 03 230001 0001 61 00", V.V500)]
    [InlineData("[MQTT-1.5.4-2] U+0000 in a filter", InvalidUtf8, "82 07 0001 0002 6100 00", V.V311)]
    public void Subscribe(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    [Theory]
    [InlineData("baseline", None, "a2 05 0001 0001 23", V.V311)]
    [InlineData("[MQTT-3.10.3-2] no topic filter", ProtocolError, "a2 02 0001", V.V311)]
    [InlineData("[MQTT-3.10.3-2] no topic filter v5", ProtocolError, "a2 03 0001 00", V.V500)]
    [InlineData("[MQTT-4.7.1-1] invalid filter", TopicFilterInvalid, "a2 06 0001 0002 2361", V.V311)]
    [InlineData("[MQTT-2.3.1-1] packet id 0", ProtocolError, "a2 05 0000 0001 23", V.V311)]
    public void Unsubscribe(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    [Theory]
    [InlineData("3.1.1 §3.14 no variable header", MalformedPacket, "e0 01 00", V.V311)]
    [InlineData("v5 §3.14.2.1 reason code 0x01 not valid", ProtocolError, "e0 01 01", V.V500)]
    [InlineData("v5 disconnect with will", None, "e0 01 04", V.V500)]
    [InlineData("v5 §3.14.2.2 Session Expiry", None, "e0 07 00 05 110000000a", V.V500)]
    [InlineData("v5 §2.2.2.2 Receive Maximum not valid in DISCONNECT", MalformedPacket, "e0 05 00 03 210001", V.V500)]
    [InlineData("v5 §3.15 AUTH empty", None, "f0 00", V.V500)]
    [InlineData("v5 §3.15.2.1 AUTH reason 0x05 not valid", ProtocolError, "f0 01 05", V.V500)]
    [InlineData("v5 §3.15.2.2 AUTH continue with method", None, "f0 07 18 05 15 0002 6b72", V.V500)]
    [InlineData("v5 §3.15.2.2 AUTH trailing byte", MalformedPacket, "f0 03 18 00 00", V.V500)]
    public void Disconnect_and_auth(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    [Theory]
    [InlineData("3.1.1 accepted, session present", None, "20 02 01 00", V.V311)]
    [InlineData("3.1.1 [MQTT-3.2.2-1] reserved ack flags", MalformedPacket, "20 02 02 00", V.V311)]
    [InlineData("3.1.1 [MQTT-3.2.2-4] session present with a refusal", ProtocolError, "20 02 01 05", V.V311)]
    [InlineData("3.1.1 §3.2.2.3 return code 6", ProtocolError, "20 02 00 06", V.V311)]
    [InlineData("v5 with Assigned Client Identifier", None, "20 07 00 00 04 12 0001 61", V.V500)]
    [InlineData("v5 §3.2.2.2 reason 0x10 not valid in CONNACK", ProtocolError, "20 03 00 10 00", V.V500)]
    [InlineData("v5 §3.2.2.3.4 Maximum QoS 2", ProtocolError, "20 05 00 00 02 2402", V.V500)]
    [InlineData("3.1.1 SUBACK", None, "90 04 0001 0080", V.V311)]
    [InlineData("3.1.1 SUBACK code 0x83 not valid", ProtocolError, "90 03 0001 83", V.V311)]
    [InlineData("v5 SUBACK", None, "90 05 0001 00 00a2", V.V500)]
    [InlineData("v5 SUBACK without codes", ProtocolError, "90 03 0001 00", V.V500)]
    [InlineData("3.1.1 UNSUBACK", None, "b0 02 0001", V.V311)]
    [InlineData("3.1.1 §3.11.3 UNSUBACK has no payload", MalformedPacket, "b0 03 0001 00", V.V311)]
    [InlineData("v5 UNSUBACK", None, "b0 05 0001 00 0011", V.V500)]
    [InlineData("v5 UNSUBACK code 0x01 not valid", ProtocolError, "b0 04 0001 00 01", V.V500)]
    public void Client_side_acks(string rule, MqttDecodeError expected, string hex, V version)
    {
        Assert.NotNull(rule);
        Check(expected, hex, version);
    }

    // Filters over 256 bytes split across segments take the segment-walking path: same answers as MqttTopic.
    [Theory]
    [InlineData("a/+/#", true)]
    [InlineData("+/+", true)]
    [InlineData("a/#/b", false)] // [MQTT-4.7.1-1]
    [InlineData("a+/b", false)] // [MQTT-4.7.1-2]
    [InlineData("b/a#", false)]
    [InlineData("$share/g/a/+", true)]
    [InlineData("$share/g+/a", false)] // [MQTT-4.8.2-2]
    [InlineData("$share//a", false)] // [MQTT-4.8.2-1]
    public void Long_filters_split_across_segments(string shape, bool valid)
    {
        var filter = shape.StartsWith("$share/", StringComparison.Ordinal)
            ? shape + "/" + new string('x', 300)
            : new string('x', 300) + "/" + shape;
        Assert.Equal(valid, MqttTopic.IsValidTopicFilter(filter));
        var w = new System.Buffers.ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteSubscribe(w, V.V311, 1, [new(filter, 0)]);
        var expected = valid ? None : TopicFilterInvalid;
        Assert.Equal(expected, MqttKit.Decode(w.WrittenSpan.ToArray(), V.V311));
        Assert.Equal(expected, MqttKit.Decode(MqttKit.BytePerSegment(w.WrittenSpan.ToArray()), V.V311));
        Assert.Equal(expected, MqttKit.Decode(TestSegment.Split(w.WrittenSpan, 150), V.V311));
    }

    [Fact]
    public void A_reader_given_another_packet_type_refuses_it()
    {
        var frame = MqttKit.Frame(MqttVectors.CapturedPublishV311);
        Assert.Equal(ProtocolError, MqttPacketReader.ReadConnect(frame, out _));
        Assert.Equal(ProtocolError, MqttPacketReader.ReadAck(frame, V.V311, out _));
        Assert.Equal(ProtocolError, MqttPacketReader.ReadSubscribe(frame, V.V311, out _));
    }

    [Fact]
    public void Every_error_has_a_description_and_a_v5_reason_code()
    {
        foreach (var error in Enum.GetValues<MqttDecodeError>())
        {
            Assert.False(string.IsNullOrEmpty(MqttDecodeErrors.Describe(error)));
            var code = MqttDecodeErrors.ToReasonCode(error);
            Assert.Equal(error == None, code == MqttReasonCode.Success);
        }

        Assert.Equal(MqttReasonCode.PacketTooLarge, MqttDecodeErrors.ToReasonCode(PacketTooLarge));
        Assert.Equal(MqttReasonCode.MalformedPacket, MqttDecodeErrors.ToReasonCode(InvalidUtf8));
    }
}
