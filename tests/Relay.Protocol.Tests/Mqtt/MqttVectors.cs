using System.Buffers;
using Relay.Protocol.Mqtt;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>
/// Golden packets. The "Captured" ones are the exact bytes mosquitto_pub / mosquitto_sub 2.0.11 (Debian
/// package mosquitto-clients) sent to a Python TcpListener on 127.0.0.1 that answered CONNACK, PUBACK and
/// SUBACK, captured on 2026-11-23 with the commands given at each vector. The others are written by hand
/// from the figures of the OASIS MQTT 3.1.1 and 5.0 specifications.
/// </summary>
internal static class MqttVectors
{
    /// <summary>
    /// mosquitto_pub -V mqttv311 -i relay-test -u alice -P secret -t devices/42/cmd -m hello -q 1 -k 30
    /// --will-topic devices/42/state --will-payload offline --will-qos 1 --will-retain: CONNECT.
    /// Flags 0xEE = user name, password, will retain, will QoS 1, will, clean session.
    /// </summary>
    public static readonly byte[] CapturedConnectV311 = TestVectors.Hex(
        "104000044d51545404ee001e000a72656c61792d746573740010646576696365732f34322f737461746500076f66666c696e650005616c6963650006736563726574");

    /// <summary>The same mosquitto_pub run: PUBLISH QoS 1, packet id 1, "devices/42/cmd", "hello".</summary>
    public static readonly byte[] CapturedPublishV311 = TestVectors.Hex("3217000e646576696365732f34322f636d64000168656c6c6f");

    /// <summary>mosquitto_pub -V mqttv311 -i q0 -t a/b -m x -r: CONNECT (keep alive 60, clean session).</summary>
    public static readonly byte[] CapturedConnectV311Minimal = TestVectors.Hex("100e00044d5154540402003c00027130");

    /// <summary>The same run: PUBLISH QoS 0 retained "a/b" "x".</summary>
    public static readonly byte[] CapturedPublishV311Retained = TestVectors.Hex("31060003612f6278");

    /// <summary>The same run: DISCONNECT.</summary>
    public static readonly byte[] CapturedDisconnect = TestVectors.Hex("e000");

    /// <summary>
    /// mosquitto_pub -V mqttv5 -i relay-test5 -u alice -P secret -t devices/42/cmd -m hello -q 1
    /// -D publish user-property k v -D publish content-type text/plain -D connect session-expiry-interval 60:
    /// CONNECT with Session Expiry Interval 60 and Receive Maximum 20.
    /// </summary>
    public static readonly byte[] CapturedConnectV5 = TestVectors.Hex(
        "102f00044d51545405c2003c08110000003c210014000b72656c61792d74657374350005616c6963650006736563726574");

    /// <summary>The same run: PUBLISH QoS 1 id 1 with User Property k=v and Content Type text/plain.</summary>
    public static readonly byte[] CapturedPublishV5 = TestVectors.Hex(
        "322c000e646576696365732f34322f636d640001142600016b00017603000a746578742f706c61696e68656c6c6f");

    /// <summary>mosquitto_sub -V mqttv311 -i relay-sub -t devices/+/state -t alerts/# -q 2: CONNECT.</summary>
    public static readonly byte[] CapturedConnectSubV311 = TestVectors.Hex("101500044d5154540402003c000972656c61792d737562");

    /// <summary>The same run: SUBSCRIBE id 1, devices/+/state QoS 2, alerts/# QoS 2.</summary>
    public static readonly byte[] CapturedSubscribeV311 = TestVectors.Hex(
        "821f0001000f646576696365732f2b2f7374617465020008616c657274732f2302");

    /// <summary>
    /// mosquitto_sub -V mqttv5 -i relay-sub5 -t devices/+/state -q 1 -D subscribe subscription-identifier 7
    /// -D connect user-property site lab: CONNECT with User Property site=lab and Receive Maximum 1.
    /// </summary>
    public static readonly byte[] CapturedConnectSubV5 = TestVectors.Hex(
        "102600044d5154540502003c0f2600047369746500036c6162210001000a72656c61792d73756235");

    /// <summary>The same run: SUBSCRIBE id 1, Subscription Identifier 7, devices/+/state QoS 1.</summary>
    public static readonly byte[] CapturedSubscribeV5 = TestVectors.Hex("82170001020b07000f646576696365732f2b2f737461746501");

    /// <summary>MQTT 3.1 (MQIsdp, level 3) CONNECT, client id "c1", clean session, keep alive 10 (3.1 §3.1 layout).</summary>
    public static readonly byte[] ConnectV31 = TestVectors.Hex("1010 0006 4d5149736470 03 02 000a 0002 6331");

    /// <summary>PINGREQ (§3.12) and PINGRESP (§3.13).</summary>
    public static readonly byte[] PingReq = [0xC0, 0x00];

    /// <summary>v5 PUBACK id 7 reason 0x10 No matching subscribers, no properties (§3.4.2.2.1: Remaining Length 3).</summary>
    public static readonly byte[] PubAckV5NoSubscribers = TestVectors.Hex("4003 0007 10");

    /// <summary>v5 DISCONNECT 0x8E Session taken over with Reason String "x".</summary>
    public static readonly byte[] DisconnectV5WithReason = TestVectors.Hex("e006 8e 04 1f 0001 78");

    /// <summary>Every golden vector with the version to read it as.</summary>
    public static IEnumerable<(string Name, byte[] Bytes, MqttProtocolVersion Version)> All()
    {
        yield return (nameof(CapturedConnectV311), CapturedConnectV311, MqttProtocolVersion.V311);
        yield return (nameof(CapturedPublishV311), CapturedPublishV311, MqttProtocolVersion.V311);
        yield return (nameof(CapturedConnectV311Minimal), CapturedConnectV311Minimal, MqttProtocolVersion.V311);
        yield return (nameof(CapturedPublishV311Retained), CapturedPublishV311Retained, MqttProtocolVersion.V311);
        yield return (nameof(CapturedDisconnect), CapturedDisconnect, MqttProtocolVersion.V311);
        yield return (nameof(CapturedConnectV5), CapturedConnectV5, MqttProtocolVersion.V500);
        yield return (nameof(CapturedPublishV5), CapturedPublishV5, MqttProtocolVersion.V500);
        yield return (nameof(CapturedConnectSubV311), CapturedConnectSubV311, MqttProtocolVersion.V311);
        yield return (nameof(CapturedSubscribeV311), CapturedSubscribeV311, MqttProtocolVersion.V311);
        yield return (nameof(CapturedConnectSubV5), CapturedConnectSubV5, MqttProtocolVersion.V500);
        yield return (nameof(CapturedSubscribeV5), CapturedSubscribeV5, MqttProtocolVersion.V500);
        yield return (nameof(ConnectV31), ConnectV31, MqttProtocolVersion.V310);
        yield return (nameof(PingReq), PingReq, MqttProtocolVersion.V311);
        yield return (nameof(PubAckV5NoSubscribers), PubAckV5NoSubscribers, MqttProtocolVersion.V500);
        yield return (nameof(DisconnectV5WithReason), DisconnectV5WithReason, MqttProtocolVersion.V500);
    }

    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var v in All())
        {
            data.Add(v.Name);
        }

        return data;
    }

    public static (byte[] Bytes, MqttProtocolVersion Version) Get(string name) => All().Where(v => v.Name == name).Select(v => (v.Bytes, v.Version)).Single();
}

/// <summary>Shared test plumbing: framing one packet and decoding it by type.</summary>
internal static class MqttKit
{
    public const int Unlimited = int.MaxValue;

    public static MqttFrame Frame(byte[] bytes) => Frame(new ReadOnlySequence<byte>(bytes));

    public static MqttFrame Frame(ReadOnlySequence<byte> sequence)
    {
        var buffer = sequence;
        var status = MqttFrameReader.TryRead(ref buffer, Unlimited, out var frame, out var error);
        Assert.Equal(MqttDecodeError.None, error);
        Assert.Equal(System.Buffers.OperationStatus.Done, status);
        Assert.True(buffer.IsEmpty, "exactly one packet");
        return frame;
    }

    /// <summary>Frames and decodes with the reader matching the packet type: the error, whatever the type.</summary>
    public static MqttDecodeError Decode(byte[] bytes, MqttProtocolVersion version) => Decode(new ReadOnlySequence<byte>(bytes), version);

    public static MqttDecodeError Decode(ReadOnlySequence<byte> sequence, MqttProtocolVersion version)
    {
        var buffer = sequence;
        var status = MqttFrameReader.TryRead(ref buffer, Unlimited, out var frame, out var error);
        if (status != System.Buffers.OperationStatus.Done)
        {
            return status == System.Buffers.OperationStatus.InvalidData ? error : (MqttDecodeError)255;
        }

        return DecodeFrame(frame, version);
    }

    public static MqttDecodeError DecodeFrame(in MqttFrame frame, MqttProtocolVersion version) => frame.Type switch
    {
        MqttPacketType.Connect => MqttPacketReader.ReadConnect(frame, out _),
        MqttPacketType.ConnAck => MqttPacketReader.ReadConnAck(frame, version, out _),
        MqttPacketType.Publish => MqttPacketReader.ReadPublish(frame, version, out _),
        MqttPacketType.PubAck or MqttPacketType.PubRec or MqttPacketType.PubRel or MqttPacketType.PubComp => MqttPacketReader.ReadAck(frame, version, out _),
        MqttPacketType.Subscribe => MqttPacketReader.ReadSubscribe(frame, version, out _),
        MqttPacketType.SubAck => MqttPacketReader.ReadSubAck(frame, version, out _),
        MqttPacketType.Unsubscribe => MqttPacketReader.ReadUnsubscribe(frame, version, out _),
        MqttPacketType.UnsubAck => MqttPacketReader.ReadUnsubAck(frame, version, out _),
        MqttPacketType.Disconnect => MqttPacketReader.ReadDisconnect(frame, version, out _),
        MqttPacketType.Auth => MqttPacketReader.ReadAuth(frame, out _),
        _ => MqttDecodeError.None,
    };

    public static string Text(in ReadOnlySequence<byte> utf8) => System.Text.Encoding.UTF8.GetString(utf8.ToArray());

    /// <summary>One segment per byte: the slowest path through every reader.</summary>
    public static ReadOnlySequence<byte> BytePerSegment(byte[] bytes)
    {
        var parts = new ReadOnlyMemory<byte>[bytes.Length];
        for (var i = 0; i < bytes.Length; i++)
        {
            parts[i] = bytes.AsMemory(i, 1);
        }

        return TestSegment.Sequence(parts);
    }
}
