using System.Buffers;
using Relay.Protocol.Mqtt;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>What the readers decode from the golden vectors, over one and many segments.</summary>
public sealed class MqttPacketReaderTests
{
    public static TheoryData<bool> Segmentations => new() { false, true };

    private static MqttFrame Frame(byte[] bytes, bool bytePerSegment)
        => MqttKit.Frame(bytePerSegment ? MqttKit.BytePerSegment(bytes) : new ReadOnlySequence<byte>(bytes));

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v311_connect_with_will_user_and_password(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(Frame(MqttVectors.CapturedConnectV311, bytePerSegment), out var c));
        Assert.Equal(MqttProtocolVersion.V311, c.Version);
        Assert.True(c.CleanStart);
        Assert.Equal(30, c.KeepAliveSeconds);
        Assert.Equal("relay-test", MqttKit.Text(c.ClientId));
        Assert.True(c.HasWill);
        Assert.Equal(1, c.WillQoS);
        Assert.True(c.WillRetain);
        Assert.Equal("devices/42/state", MqttKit.Text(c.WillTopic));
        Assert.Equal("offline", MqttKit.Text(c.WillPayload));
        Assert.True(c.HasUsername);
        Assert.Equal("alice", MqttKit.Text(c.Username));
        Assert.True(c.HasPassword);
        Assert.Equal("secret", MqttKit.Text(c.Password));
        Assert.True(c.Properties.IsEmpty);
    }

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v5_connect_properties(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(Frame(MqttVectors.CapturedConnectV5, bytePerSegment), out var c));
        Assert.Equal(MqttProtocolVersion.V500, c.Version);
        Assert.Equal("relay-test5", MqttKit.Text(c.ClientId));
        Assert.Equal(60u, c.Properties.SessionExpiryInterval);
        Assert.Equal((ushort)20, c.Properties.ReceiveMaximum);
        Assert.False(c.HasWill);
        Assert.Equal("alice", MqttKit.Text(c.Username));
        Assert.Equal("secret", MqttKit.Text(c.Password));
    }

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v5_connect_user_property(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(Frame(MqttVectors.CapturedConnectSubV5, bytePerSegment), out var c));
        Assert.Equal(1, c.Properties.UserPropertyCount);
        var pairs = new List<(string, string)>();
        foreach (var (name, value) in c.Properties.GetUserProperties())
        {
            pairs.Add((MqttKit.Text(name), MqttKit.Text(value)));
        }

        Assert.Equal([("site", "lab")], pairs);
        Assert.Equal((ushort)1, c.Properties.ReceiveMaximum);
    }

    [Fact]
    public void Mqtt_3_1_MQIsdp_level_3_is_accepted()
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(MqttKit.Frame(MqttVectors.ConnectV31), out var c));
        Assert.Equal(MqttProtocolVersion.V310, c.Version);
        Assert.Equal("c1", MqttKit.Text(c.ClientId));
        Assert.Equal(10, c.KeepAliveSeconds);
    }

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v311_publish_qos1(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Frame(MqttVectors.CapturedPublishV311, bytePerSegment), MqttProtocolVersion.V311, out var p));
        Assert.Equal(1, p.QoS);
        Assert.False(p.Retain);
        Assert.False(p.Dup);
        Assert.Equal(1, p.PacketId);
        Assert.Equal("devices/42/cmd", MqttKit.Text(p.Topic));
        Assert.Equal("hello", MqttKit.Text(p.Payload));
    }

    [Fact]
    public void Mosquitto_v311_publish_qos0_retained_has_no_packet_id()
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(MqttKit.Frame(MqttVectors.CapturedPublishV311Retained), MqttProtocolVersion.V311, out var p));
        Assert.Equal(0, p.QoS);
        Assert.True(p.Retain);
        Assert.Equal(0, p.PacketId);
        Assert.Equal("a/b", MqttKit.Text(p.Topic));
        Assert.Equal("x", MqttKit.Text(p.Payload));
    }

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v5_publish_properties(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Frame(MqttVectors.CapturedPublishV5, bytePerSegment), MqttProtocolVersion.V500, out var p));
        Assert.Equal("devices/42/cmd", MqttKit.Text(p.Topic));
        Assert.Equal("hello", MqttKit.Text(p.Payload));
        Assert.True(p.Properties.HasContentType);
        Assert.Equal("text/plain", MqttKit.Text(p.Properties.ContentType));
        Assert.Equal(1, p.Properties.UserPropertyCount);
        var e = p.Properties.GetUserProperties();
        Assert.True(e.MoveNext());
        Assert.Equal("k", MqttKit.Text(e.Current.Name));
        Assert.Equal("v", MqttKit.Text(e.Current.Value));
        Assert.False(e.MoveNext());

        // §3.3.4: forwarded as they came (no Topic Alias or Subscription Identifier in them to drop).
        var forwarded = new byte[p.Properties.GetForwardableLength()];
        Assert.Equal(forwarded.Length, p.Properties.CopyForwardableTo(forwarded));
        Assert.Equal(p.Properties.Raw.ToArray(), forwarded);
    }

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v311_subscribe_two_filters(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubscribe(Frame(MqttVectors.CapturedSubscribeV311, bytePerSegment), MqttProtocolVersion.V311, out var s));
        Assert.Equal(1, s.PacketId);
        Assert.Equal(2, s.EntryCount);
        var entries = new List<(string, byte)>();
        foreach (var entry in s.GetEntries())
        {
            entries.Add((MqttKit.Text(entry.TopicFilter), entry.MaximumQoS));
        }

        Assert.Equal([("devices/+/state", (byte)2), ("alerts/#", (byte)2)], entries);
    }

    [Theory]
    [MemberData(nameof(Segmentations))]
    public void Mosquitto_v5_subscribe_with_subscription_identifier(bool bytePerSegment)
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubscribe(Frame(MqttVectors.CapturedSubscribeV5, bytePerSegment), MqttProtocolVersion.V500, out var s));
        Assert.Equal(7u, s.Properties.SubscriptionIdentifier);
        var e = s.GetEntries();
        Assert.True(e.MoveNext());
        Assert.Equal("devices/+/state", MqttKit.Text(e.Current.TopicFilter));
        Assert.Equal(1, e.Current.MaximumQoS);
        Assert.False(e.Current.NoLocal);
        Assert.Equal(0, e.Current.RetainHandling);
        Assert.False(e.MoveNext());
    }

    [Fact]
    public void V5_puback_with_reason_and_no_properties()
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(MqttKit.Frame(MqttVectors.PubAckV5NoSubscribers), MqttProtocolVersion.V500, out var a));
        Assert.Equal(MqttPacketType.PubAck, a.Type);
        Assert.Equal(7, a.PacketId);
        Assert.Equal(MqttReasonCode.NoMatchingSubscribers, a.ReasonCode);
        Assert.True(a.Properties.IsEmpty);
    }

    [Fact]
    public void V5_disconnect_with_reason_string()
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadDisconnect(MqttKit.Frame(MqttVectors.DisconnectV5WithReason), MqttProtocolVersion.V500, out var d));
        Assert.Equal(MqttReasonCode.SessionTakenOver, d.ReasonCode);
        Assert.True(d.Properties.HasReasonString);
        Assert.Equal("x", MqttKit.Text(d.Properties.ReasonString));
    }

    [Fact]
    public void V5_disconnect_without_body_is_normal()
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadDisconnect(MqttKit.Frame(MqttVectors.CapturedDisconnect), MqttProtocolVersion.V500, out var d));
        Assert.Equal(MqttReasonCode.Success, d.ReasonCode);
    }

    [Fact]
    public void Forwardable_properties_drop_topic_alias_and_subscription_identifiers()
    {
        // §3.3.4: Topic Alias (0x23) is per connection, Subscription Identifier (0x0B) per subscriber.
        var packet = TestVectors.Hex("3010 0001 61 0c 23 0001 0b 05 26 0001 6b 0001 76");
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(MqttKit.Frame(packet), MqttProtocolVersion.V500, out var p));
        Assert.Equal((ushort)1, p.Properties.TopicAlias);
        Assert.Equal(5u, p.Properties.SubscriptionIdentifier);
        var forwarded = new byte[p.Properties.GetForwardableLength()];
        p.Properties.CopyForwardableTo(forwarded);
        Assert.Equal(TestVectors.Hex("26 0001 6b 0001 76"), forwarded);
    }
}
