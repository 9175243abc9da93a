using System.Buffers;
using Relay.Protocol.Mqtt;
using V = Relay.Protocol.Mqtt.MqttProtocolVersion;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>Every writer's output read back by the matching reader, plus byte-exact checks against the captured vectors.</summary>
public sealed class MqttWriterRoundTripTests
{
    private static MqttFrame Single(ArrayBufferWriter<byte> w)
    {
        var bytes = w.WrittenMemory.ToArray();
        var frame = MqttKit.Frame(bytes);
        Assert.Equal(bytes.Length, frame.TotalLength);
        return frame;
    }

    [Fact]
    public void Connect_v311_writes_the_bytes_mosquitto_pub_sent()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteConnect(w, new MqttConnectOptions
        {
            Version = V.V311,
            ClientId = "relay-test",
            CleanStart = true,
            KeepAliveSeconds = 30,
            Username = "alice",
            Password = "secret"u8.ToArray(),
            HasPassword = true,
            WillTopic = "devices/42/state",
            WillPayload = "offline"u8.ToArray(),
            WillQoS = 1,
            WillRetain = true,
        });
        Assert.Equal(MqttVectors.CapturedConnectV311, w.WrittenSpan.ToArray());
    }

    [Fact]
    public void Connect_v5_writes_the_bytes_mosquitto_pub_sent()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteConnect(w, new MqttConnectOptions
        {
            Version = V.V500,
            ClientId = "relay-test5",
            CleanStart = true,
            KeepAliveSeconds = 60,
            Username = "alice",
            Password = "secret"u8.ToArray(),
            HasPassword = true,
            SessionExpiryInterval = 60,
            ReceiveMaximum = 20,
        });
        Assert.Equal(MqttVectors.CapturedConnectV5, w.WrittenSpan.ToArray());
    }

    [Fact]
    public void Publish_writes_the_bytes_mosquitto_pub_sent_v311_and_v5()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WritePublish(w, V.V311, "devices/42/cmd"u8, 1, false, false, 1, default, "hello"u8);
        Assert.Equal(MqttVectors.CapturedPublishV311, w.WrittenSpan.ToArray());

        w.Clear();
        var p = new MqttPublishProperties { ContentType = "text/plain", UserProperties = [new("k", "v")] };
        MqttPacketWriter.WritePublish(w, V.V500, "devices/42/cmd"u8, 1, false, false, 1, p, "hello"u8);
        // Same properties; this writer puts them in identifier order, mosquitto in command-line order.
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Single(w), V.V500, out var mine));
        Assert.Equal(MqttVectors.CapturedPublishV5.Length, w.WrittenCount);
        Assert.Equal("text/plain", MqttKit.Text(mine.Properties.ContentType));
        Assert.Equal(1, mine.Properties.UserPropertyCount);
        Assert.Equal(w.WrittenCount, MqttPacketWriter.MeasurePublish(V.V500, "devices/42/cmd"u8, 1, p, 5));
    }

    [Fact]
    public void Subscribe_writes_the_bytes_mosquitto_sub_sent_v311_and_v5()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteSubscribe(w, V.V311, 1, [new("devices/+/state", 2), new("alerts/#", 2)]);
        Assert.Equal(MqttVectors.CapturedSubscribeV311, w.WrittenSpan.ToArray());

        w.Clear();
        MqttPacketWriter.WriteSubscribe(w, V.V500, 1, [new("devices/+/state", 1)], subscriptionIdentifier: 7);
        Assert.Equal(MqttVectors.CapturedSubscribeV5, w.WrittenSpan.ToArray());
    }

    [Theory]
    [InlineData(V.V311)]
    [InlineData(V.V500)]
    [InlineData(V.V310)]
    public void Connect_round_trips(V version)
    {
        var w = new ArrayBufferWriter<byte>();
        var options = new MqttConnectOptions
        {
            Version = version,
            ClientId = "dev-1",
            KeepAliveSeconds = 45,
            Username = "ü-user",
            Password = new byte[] { 0, 1, 2 },
            HasPassword = true,
            WillTopic = "w/t",
            WillPayload = new byte[] { 9 },
            WillQoS = 2,
            WillDelayInterval = 5,
            SessionExpiryInterval = 3600,
            ReceiveMaximum = 10,
            MaximumPacketSize = 65536,
            TopicAliasMaximum = 4,
            AuthenticationMethod = "tok",
            AuthenticationData = new byte[] { 7 },
            UserProperties = [new("a", "b"), new("a", "c")],
        };
        MqttPacketWriter.WriteConnect(w, options);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(Single(w), out var c));
        Assert.Equal(version, c.Version);
        Assert.False(c.CleanStart);
        Assert.Equal(45, c.KeepAliveSeconds);
        Assert.Equal("dev-1", MqttKit.Text(c.ClientId));
        Assert.Equal("ü-user", MqttKit.Text(c.Username));
        Assert.Equal(new byte[] { 0, 1, 2 }, c.Password.ToArray());
        Assert.Equal("w/t", MqttKit.Text(c.WillTopic));
        Assert.Equal(2, c.WillQoS);
        Assert.Equal(new byte[] { 9 }, c.WillPayload.ToArray());
        if (version == V.V500)
        {
            Assert.Equal(5u, c.WillProperties.WillDelayInterval);
            Assert.Equal(3600u, c.Properties.SessionExpiryInterval);
            Assert.Equal((ushort)10, c.Properties.ReceiveMaximum);
            Assert.Equal(65536u, c.Properties.MaximumPacketSize);
            Assert.Equal((ushort)4, c.Properties.TopicAliasMaximum);
            Assert.Equal("tok", MqttKit.Text(c.Properties.AuthenticationMethod));
            Assert.Equal(new byte[] { 7 }, c.Properties.AuthenticationData.ToArray());
            var values = new List<string>();
            foreach (var (name, value) in c.Properties.GetUserProperties())
            {
                values.Add(MqttKit.Text(name) + "=" + MqttKit.Text(value));
            }

            Assert.Equal(["a=b", "a=c"], values);
        }
        else
        {
            Assert.True(c.Properties.IsEmpty);
        }
    }

    [Fact]
    public void ConnAck_round_trips_with_every_property()
    {
        var w = new ArrayBufferWriter<byte>();
        var p = new MqttConnAckProperties
        {
            SessionExpiryInterval = 1, ReceiveMaximum = 2, MaximumQoS = 1, RetainAvailable = false, MaximumPacketSize = 4096,
            AssignedClientIdentifier = "auto-1", TopicAliasMaximum = 3, ReasonString = "ok", WildcardSubscriptionAvailable = true,
            SubscriptionIdentifiersAvailable = false, SharedSubscriptionAvailable = true, ServerKeepAlive = 20,
            ResponseInformation = "resp", ServerReference = "other:1883", AuthenticationMethod = "m", UserProperties = [new("x", "y")],
        };
        MqttPacketWriter.WriteConnAck(w, V.V500, true, 0, p);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnAck(Single(w), V.V500, out var a));
        Assert.True(a.SessionPresent);
        var q = a.Properties;
        Assert.Equal(1u, q.SessionExpiryInterval);
        Assert.Equal((ushort)2, q.ReceiveMaximum);
        Assert.Equal((byte)1, q.MaximumQoS);
        Assert.Equal((byte)0, q.RetainAvailable);
        Assert.Equal(4096u, q.MaximumPacketSize);
        Assert.Equal("auto-1", MqttKit.Text(q.AssignedClientIdentifier));
        Assert.Equal((ushort)3, q.TopicAliasMaximum);
        Assert.Equal("ok", MqttKit.Text(q.ReasonString));
        Assert.Equal((byte)1, q.WildcardSubscriptionAvailable);
        Assert.Equal((byte)0, q.SubscriptionIdentifierAvailable);
        Assert.Equal((byte)1, q.SharedSubscriptionAvailable);
        Assert.Equal((ushort)20, q.ServerKeepAlive);
        Assert.Equal("resp", MqttKit.Text(q.ResponseInformation));
        Assert.Equal("other:1883", MqttKit.Text(q.ServerReference));
        Assert.Equal("m", MqttKit.Text(q.AuthenticationMethod));
        Assert.Equal(1, q.UserPropertyCount);

        // v3.1.1 (§3.2): 20 02 flags code; a refusal never has Session Present ([MQTT-3.2.2-4]).
        w.Clear();
        MqttPacketWriter.WriteConnAck(w, V.V311, true, (byte)MqttConnectReturnCode.NotAuthorized, default);
        Assert.Equal(new byte[] { 0x20, 0x02, 0x00, 0x05 }, w.WrittenSpan.ToArray());
    }

    [Theory]
    [InlineData(V.V311, 0)]
    [InlineData(V.V500, 0)]
    [InlineData(V.V500, 1)]
    [InlineData(V.V500, 2)]
    public void Publish_round_trips_with_sequence_payload(V version, byte qos)
    {
        var payload = TestSegment.Sequence(new byte[] { 1, 2 }, Array.Empty<byte>(), new byte[] { 3 });
        var p = version == V.V500
            ? new MqttPublishProperties
            {
                PayloadFormatIndicator = 1, MessageExpiryInterval = 30, TopicAlias = 2, ResponseTopic = "r/t",
                CorrelationData = new byte[] { 5 }, HasCorrelationData = true, SubscriptionIdentifiers = new uint[] { 1, 300 },
                ContentType = "c", UserProperties = [new("u", "v")],
            }
            : default;
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WritePublish(w, version, "t/1"u8, qos, true, qos > 0, qos > 0 ? (ushort)9 : (ushort)0, p, payload);
        Assert.Equal(w.WrittenCount, MqttPacketWriter.MeasurePublish(version, "t/1"u8, qos, p, payload.Length));
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Single(w), version, out var r));
        Assert.Equal(qos, r.QoS);
        Assert.True(r.Retain);
        Assert.Equal(qos > 0, r.Dup);
        Assert.Equal(qos > 0 ? 9 : 0, r.PacketId);
        Assert.Equal("t/1", MqttKit.Text(r.Topic));
        Assert.Equal(new byte[] { 1, 2, 3 }, r.Payload.ToArray());
        if (version == V.V500)
        {
            Assert.Equal((byte)1, r.Properties.PayloadFormatIndicator);
            Assert.Equal(30u, r.Properties.MessageExpiryInterval);
            Assert.Equal((ushort)2, r.Properties.TopicAlias);
            Assert.Equal("r/t", MqttKit.Text(r.Properties.ResponseTopic));
            Assert.Equal(new byte[] { 5 }, r.Properties.CorrelationData.ToArray());
            Assert.Equal(1u, r.Properties.SubscriptionIdentifier);
            Assert.Equal("c", MqttKit.Text(r.Properties.ContentType));
        }
    }

    [Fact]
    public void Forwarded_properties_are_appended_as_they_are()
    {
        var source = TestVectors.Hex("3010 0001 61 0c 23 0001 0b 05 26 0001 6b 0001 76");
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(MqttKit.Frame(source), V.V500, out var incoming));
        var stored = new byte[incoming.Properties.GetForwardableLength()];
        incoming.Properties.CopyForwardableTo(stored);

        var w = new ArrayBufferWriter<byte>();
        var p = new MqttPublishProperties { ForwardedProperties = stored, SubscriptionIdentifiers = new uint[] { 42 } };
        MqttPacketWriter.WritePublish(w, V.V500, "a"u8, 0, false, false, 0, p, incoming.Payload);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Single(w), V.V500, out var outgoing));
        Assert.Null(outgoing.Properties.TopicAlias);
        Assert.Equal(42u, outgoing.Properties.SubscriptionIdentifier);
        Assert.Equal(1, outgoing.Properties.UserPropertyCount);
    }

    [Fact]
    public void A_payload_larger_than_the_writers_buffer_is_copied_in_chunks()
    {
        var payload = new byte[100_000];
        new Random(5).NextBytes(payload);
        var w = new ArrayBufferWriter<byte>(16);
        MqttPacketWriter.WritePublish(w, V.V311, "big"u8, 0, false, false, 0, default, payload);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Single(w), V.V311, out var r));
        Assert.Equal(payload, r.Payload.ToArray());
    }

    [Theory]
    [InlineData(MqttPacketType.PubAck, (byte)0x40)]
    [InlineData(MqttPacketType.PubRec, (byte)0x50)]
    [InlineData(MqttPacketType.PubRel, (byte)0x62)]
    [InlineData(MqttPacketType.PubComp, (byte)0x70)]
    public void Acks_round_trip_and_omit_success_without_properties_3_4_2_1(MqttPacketType type, byte first)
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteAck(w, type, V.V500, 5, MqttReasonCode.Success);
        Assert.Equal(new byte[] { first, 0x02, 0x00, 0x05 }, w.WrittenSpan.ToArray());

        w.Clear();
        var code = type is MqttPacketType.PubRel or MqttPacketType.PubComp ? MqttReasonCode.PacketIdentifierNotFound : MqttReasonCode.QuotaExceeded;
        MqttPacketWriter.WriteAck(w, type, V.V500, 5, code);
        Assert.Equal(new byte[] { first, 0x03, 0x00, 0x05, (byte)code }, w.WrittenSpan.ToArray());

        w.Clear();
        MqttPacketWriter.WriteAck(w, type, V.V500, 5, code, "why");
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(Single(w), V.V500, out var a));
        Assert.Equal(type, a.Type);
        Assert.Equal(5, a.PacketId);
        Assert.Equal(code, a.ReasonCode);
        Assert.Equal("why", MqttKit.Text(a.Properties.ReasonString));

        w.Clear();
        MqttPacketWriter.WriteAck(w, type, V.V311, 5, code, "ignored in 3.1.1");
        Assert.Equal(new byte[] { first, 0x02, 0x00, 0x05 }, w.WrittenSpan.ToArray());
    }

    [Fact]
    public void SubAck_and_UnsubAck_round_trip()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteSubAck(w, V.V500, 3, [0x00, 0x02, 0x8F], "partly");
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubAck(Single(w), V.V500, out var s));
        Assert.Equal(3, s.PacketId);
        Assert.Equal(new byte[] { 0x00, 0x02, 0x8F }, s.ReasonCodes.ToArray());
        Assert.Equal("partly", MqttKit.Text(s.Properties.ReasonString));

        w.Clear();
        MqttPacketWriter.WriteSubAck(w, V.V311, 3, [0x01, 0x80]);
        Assert.Equal(TestVectors.Hex("9004 0003 0180"), w.WrittenSpan.ToArray());

        w.Clear();
        MqttPacketWriter.WriteUnsubAck(w, V.V500, 4, [0x00, 0x11]);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadUnsubAck(Single(w), V.V500, out var u));
        Assert.Equal(new byte[] { 0x00, 0x11 }, u.ReasonCodes.ToArray());

        // v3.1.1 §3.11: no payload.
        w.Clear();
        MqttPacketWriter.WriteUnsubAck(w, V.V311, 4, [0x00]);
        Assert.Equal(TestVectors.Hex("b002 0004"), w.WrittenSpan.ToArray());
    }

    [Fact]
    public void Subscribe_options_and_unsubscribe_round_trip()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteSubscribe(w, V.V500, 8, [new("a/+", 1) { NoLocal = true, RetainAsPublished = true, RetainHandling = 2 }, new("$share/g/b/#", 2)]);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubscribe(Single(w), V.V500, out var s));
        var entries = new List<MqttSubscribeEntry>();
        foreach (var e in s.GetEntries())
        {
            entries.Add(e);
        }

        Assert.Equal(2, entries.Count);
        Assert.True(entries[0].NoLocal);
        Assert.True(entries[0].RetainAsPublished);
        Assert.Equal(2, entries[0].RetainHandling);
        Assert.Equal("$share/g/b/#", MqttKit.Text(entries[1].TopicFilter));

        w.Clear();
        MqttPacketWriter.WriteUnsubscribe(w, V.V500, 9, ["a/+", "b/#"]);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadUnsubscribe(Single(w), V.V500, out var u));
        Assert.Equal(2, u.FilterCount);
        var filters = new List<string>();
        foreach (var f in u.GetFilters())
        {
            filters.Add(MqttKit.Text(f));
        }

        Assert.Equal(["a/+", "b/#"], filters);
    }

    [Fact]
    public void Disconnect_auth_and_pings()
    {
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteDisconnect(w, V.V500, MqttReasonCode.Success);
        Assert.Equal(new byte[] { 0xE0, 0x00 }, w.WrittenSpan.ToArray());

        w.Clear();
        MqttPacketWriter.WriteDisconnect(w, V.V500, MqttReasonCode.UseAnotherServer, "moving", "b:1883", 0);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadDisconnect(Single(w), V.V500, out var d));
        Assert.Equal(MqttReasonCode.UseAnotherServer, d.ReasonCode);
        Assert.Equal("moving", MqttKit.Text(d.Properties.ReasonString));
        Assert.Equal("b:1883", MqttKit.Text(d.Properties.ServerReference));
        Assert.Equal(0u, d.Properties.SessionExpiryInterval);

        w.Clear();
        MqttPacketWriter.WriteDisconnect(w, V.V311, MqttReasonCode.ServerShuttingDown, "ignored");
        Assert.Equal(MqttVectors.CapturedDisconnect, w.WrittenSpan.ToArray());

        w.Clear();
        MqttPacketWriter.WriteAuth(w, MqttReasonCode.ContinueAuthentication, "SCRAM", null);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAuth(Single(w), out var a));
        Assert.Equal(MqttReasonCode.ContinueAuthentication, a.ReasonCode);
        Assert.Equal("SCRAM", MqttKit.Text(a.Properties.AuthenticationMethod));

        w.Clear();
        MqttPacketWriter.WritePingReq(w);
        MqttPacketWriter.WritePingResp(w);
        Assert.Equal(new byte[] { 0xC0, 0x00, 0xD0, 0x00 }, w.WrittenSpan.ToArray());
    }

    [Fact]
    public void Writers_refuse_what_cannot_be_encoded()
    {
        var w = new ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WritePublish(w, V.V311, "a"u8, 3, false, false, 1, default, ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WritePublish(w, V.V311, "a"u8, 1, false, false, 0, default, ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WritePublish(w, V.V311, "a/#"u8, 0, false, false, 0, default, ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WritePublish(w, V.V311, ""u8, 0, false, false, 0, default, ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WritePublish(w, V.V500, "a"u8, 0, false, true, 0, default, ReadOnlySpan<byte>.Empty));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WriteAck(w, MqttPacketType.PubAck, V.V500, 0, MqttReasonCode.Success));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WriteSubscribe(w, V.V500, 1, ReadOnlySpan<MqttSubscriptionRequest>.Empty));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WriteConnect(w, new MqttConnectOptions { Version = V.V311, HasPassword = true }));
        Assert.Throws<ArgumentException>(() => MqttPacketWriter.WriteConnect(w, new MqttConnectOptions { Version = V.V311, ClientId = new string('x', 70_000) }));
        Assert.Equal(0, w.WrittenCount);
    }

    [Fact]
    public void MeasurePublish_reports_sizes_beyond_what_can_be_written()
    {
        // A caller compares with the peer's Maximum Packet Size ([MQTT-3.1.2-24]) without a try.
        Assert.Equal(1 + 4 + 2 + 1 + 268_435_455L, MqttPacketWriter.MeasurePublish(V.V311, "a"u8, 0, default, 268_435_455));
        Assert.Equal(2 + 3 + 100, MqttPacketWriter.MeasurePublish(V.V311, "a"u8, 0, default, 100));
    }
}
