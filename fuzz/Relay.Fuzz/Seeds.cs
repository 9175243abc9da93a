using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Text;
using Relay.Protocol.Mqtt;
using Relay.Protocol.Stun;
using Relay.Server.Turn;

namespace Relay.Fuzz;

/// <summary>
/// The seed corpus (fuzz/corpus/seeds-*), written with the protocol library's own writers so every seed is a
/// valid conversation the fuzzer mutates from: MQTT 3.1.1 and 5.0 sessions touching each packet type, and
/// STUN/TURN exchanges (Binding, the TURN methods signed as the known user, ChannelData, RFC 6062) over UDP
/// and TCP in <see cref="StunTarget"/>'s record format. Deterministic: fixed transaction ids, no clock.
/// </summary>
internal static class Seeds
{
    public static void Write(string directory)
    {
        var mqtt = Directory.CreateDirectory(Path.Combine(directory, "mqtt")).FullName;
        var stun = Directory.CreateDirectory(Path.Combine(directory, "stun")).FullName;
        foreach (var (name, bytes) in MqttSeeds())
        {
            File.WriteAllBytes(Path.Combine(mqtt, "seed-" + name), bytes);
        }

        foreach (var (name, bytes) in StunSeeds())
        {
            File.WriteAllBytes(Path.Combine(stun, "seed-" + name), bytes);
        }
    }

    private static IEnumerable<(string, byte[])> MqttSeeds()
    {
        foreach (var version in new[] { MqttProtocolVersion.V311, MqttProtocolVersion.V500 })
        {
            var v = version == MqttProtocolVersion.V500 ? "v5" : "v311";
            yield return ($"{v}-connect", Mqtt(w => Connect(w, version, clean: true)));
            yield return ($"{v}-session", Mqtt(w =>
            {
                Connect(w, version, clean: true);
                MqttPacketWriter.WriteSubscribe(w, version, 1, [new("devices/+/state", 1), new("a/#", 2), new("#", 0)]);
                Publish(w, version, "a/b", 0, retain: false, 0, "zero");
                Publish(w, version, "a/b", 1, retain: true, 2, "one");
                Publish(w, version, "a/c", 2, retain: false, 3, "two");
                MqttPacketWriter.WriteAck(w, MqttPacketType.PubRel, version, 3, MqttReasonCode.Success, null);
                MqttPacketWriter.WriteAck(w, MqttPacketType.PubAck, version, 1, MqttReasonCode.Success, null);
                MqttPacketWriter.WriteAck(w, MqttPacketType.PubRec, version, 2, MqttReasonCode.Success, null);
                MqttPacketWriter.WriteAck(w, MqttPacketType.PubComp, version, 2, MqttReasonCode.Success, null);
                MqttPacketWriter.WritePingReq(w);
                MqttPacketWriter.WriteUnsubscribe(w, version, 4, ["a/#", "nothing"]);
                Publish(w, version, "a/b", 1, retain: true, 5, string.Empty);
                MqttPacketWriter.WriteDisconnect(w, version, MqttReasonCode.Success);
            }));
            yield return ($"{v}-will-persistent", Mqtt(w =>
            {
                Connect(w, version, clean: false, will: true);
                MqttPacketWriter.WriteSubscribe(w, version, 7, [new("$share/g/jobs/#", 1), new("will/#", 2)]);
                Publish(w, version, "jobs/1", 2, retain: false, 8, "job");
            }));
        }

        yield return ("v5-properties", Mqtt(w =>
        {
            var version = MqttProtocolVersion.V500;
            Connect(w, version, clean: true);
            MqttPacketWriter.WriteSubscribe(w, version, 1, [new("t/#", 2) { NoLocal = false, RetainAsPublished = true, RetainHandling = 1 }]);
            var properties = new MqttPublishProperties
            {
                TopicAlias = 3,
                PayloadFormatIndicator = 1,
                MessageExpiryInterval = 60,
                ResponseTopic = "t/reply",
                CorrelationData = new byte[] { 1, 2, 3 },
                HasCorrelationData = true,
                ContentType = "text/plain",
                UserProperties = [new("k", "v")],
            };
            MqttPacketWriter.WritePublish(w, version, "t/alias"u8, 1, false, false, 2, properties, "aliased"u8);

            // The alias alone names the topic now (MQTT 5.0 §3.3.2.3.4).
            MqttPacketWriter.WritePublish(w, version, ""u8, 1, false, false, 3, new MqttPublishProperties { TopicAlias = 3 }, "by alias"u8);
            MqttPacketWriter.WriteAuth(w, MqttReasonCode.ReAuthenticate, "none", null);
            MqttPacketWriter.WriteDisconnect(w, version, MqttReasonCode.DisconnectWithWill, "bye");
        }));
    }

    private static void Connect(ArrayBufferWriter<byte> w, MqttProtocolVersion version, bool clean, bool will = false)
    {
        var options = new MqttConnectOptions
        {
            Version = version,
            ClientId = "fuzz-client",
            CleanStart = clean,
            KeepAliveSeconds = 30,
        };
        if (will)
        {
            options.WillTopic = "will/fuzz-client";
            options.WillPayload = "gone"u8.ToArray();
            options.WillQoS = 1;
            options.WillRetain = true;
        }

        if (version == MqttProtocolVersion.V500)
        {
            options.SessionExpiryInterval = clean ? 0 : 300u;
            options.ReceiveMaximum = 8;
            options.MaximumPacketSize = 4096;
            options.TopicAliasMaximum = 4;
            options.WillDelayInterval = will ? 5u : null;
            options.UserProperties = [new("seed", "1")];
        }

        MqttPacketWriter.WriteConnect(w, options);
    }

    private static void Publish(ArrayBufferWriter<byte> w, MqttProtocolVersion version, string topic, byte qos, bool retain, ushort packetId, string payload) =>
        MqttPacketWriter.WritePublish(w, version, Encoding.UTF8.GetBytes(topic), qos, retain, false, packetId, default, Encoding.UTF8.GetBytes(payload).AsSpan());

    private static byte[] Mqtt(Action<ArrayBufferWriter<byte>> write)
    {
        var writer = new ArrayBufferWriter<byte>();
        write(writer);
        return writer.WrittenSpan.ToArray();
    }

    // STUN/TURN: records [control][length][message]; control 1 = TCP stream, 2 = sign as the known user.
    private const byte Udp = 0;
    private const byte Tcp = 1;
    private const byte Signed = 2;

    private static IEnumerable<(string, byte[])> StunSeeds()
    {
        var peer = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Loopback, 19001));
        yield return ("binding-udp", Records((Udp, Message(StunMethod.Binding, StunClass.Request, 1, static (ref StunMessageWriter m) => m.WriteFingerprint()))));
        yield return ("binding-rfc5780", Records((Udp, Message(StunMethod.Binding, StunClass.Request, 2, static (ref StunMessageWriter m) =>
        {
            m.WriteChangeRequest(changeIp: false, changePort: true);
            m.WriteResponsePort(3479);
            m.WritePadding(16);
        }))));
        yield return ("allocate-unauthenticated", Records((Udp, Message(StunMethod.Allocate, StunClass.Request, 3, static (ref StunMessageWriter m) => m.WriteUInt32(StunAttributeType.RequestedTransport, 17u << 24)))));

        foreach (var (transport, name) in new[] { (Udp, "udp"), (Tcp, "tcp") })
        {
            var t = (byte)(transport | Signed);
            yield return ($"turn-{name}", Records(
                (t, Authenticated(StunMethod.Allocate, 10, static (ref StunMessageWriter m) => m.WriteUInt32(StunAttributeType.RequestedTransport, 17u << 24))),
                (t, Authenticated(StunMethod.CreatePermission, 11, (ref StunMessageWriter m) => m.WriteXorAddress(StunAttributeType.XorPeerAddress, peer))),
                (t, Authenticated(StunMethod.ChannelBind, 12, (ref StunMessageWriter m) =>
                {
                    m.WriteUInt32(StunAttributeType.ChannelNumber, 0x4000u << 16);
                    m.WriteXorAddress(StunAttributeType.XorPeerAddress, peer);
                })),
                (transport, Message(StunMethod.Send, StunClass.Indication, 13, (ref StunMessageWriter m) =>
                {
                    m.WriteXorAddress(StunAttributeType.XorPeerAddress, peer);
                    m.WriteAttribute(StunAttributeType.Data, "hello"u8);
                })),
                (transport, new byte[] { 0x40, 0x00, 0x00, 0x04, (byte)'d', (byte)'a', (byte)'t', (byte)'a' }),
                (t, Authenticated(StunMethod.Refresh, 14, static (ref StunMessageWriter m) => m.WriteUInt32(StunAttributeType.Lifetime, 600))),
                (t, Authenticated(StunMethod.Refresh, 15, static (ref StunMessageWriter m) => m.WriteUInt32(StunAttributeType.Lifetime, 0)))));
        }

        yield return ("turn-sha256", Records((Udp | Signed, Authenticated(StunMethod.Allocate, 20, static (ref StunMessageWriter m) =>
        {
            m.WritePasswordAlgorithm(StunPasswordAlgorithm.Sha256);
            m.WriteUInt32(StunAttributeType.RequestedTransport, 17u << 24);
            m.WriteAttribute(StunAttributeType.RequestedAddressFamily, [0x01, 0, 0, 0]);
            m.WriteAttribute(StunAttributeType.DontFragment, []);
        }, sha256: true))));
        yield return ("turn-rfc6062", Records(
            (Tcp | Signed, Authenticated(StunMethod.Allocate, 30, static (ref StunMessageWriter m) => m.WriteUInt32(StunAttributeType.RequestedTransport, 6u << 24))),
            (Tcp | Signed, Authenticated(StunMethod.Connect, 31, (ref StunMessageWriter m) => m.WriteXorAddress(StunAttributeType.XorPeerAddress, peer))),
            (Tcp | Signed, Authenticated(StunMethod.ConnectionBind, 32, static (ref StunMessageWriter m) => m.WriteUInt32(StunAttributeType.ConnectionId, 1)))));
        yield return ("binding-tcp-then-garbage", Records(
            (Tcp, Message(StunMethod.Binding, StunClass.Request, 40, static (ref StunMessageWriter m) => m.WriteAttribute(StunAttributeType.Software, "seed"u8))),
            (Tcp, [0x00, 0x01, 0x00, 0x08, 0x21, 0x12])));
    }

    private delegate void Attributes(ref StunMessageWriter writer);

    private static byte[] Message(StunMethod method, StunClass stunClass, byte id, Attributes attributes)
    {
        Span<byte> transaction = stackalloc byte[StunTransactionId.Length];
        transaction.Fill(id);
        var buffer = new byte[1024];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(method, stunClass), StunTransactionId.Read(transaction));
        attributes(ref writer);
        return buffer[..writer.Length];
    }

    /// <summary>A request with the long-term credential attributes; the harness fills in the nonce and the MACs.</summary>
    private static byte[] Authenticated(StunMethod method, byte id, Attributes attributes, bool sha256 = false) => Message(method, StunClass.Request, id, (ref StunMessageWriter m) =>
    {
        attributes(ref m);
        m.WriteAttribute(StunAttributeType.Username, Encoding.UTF8.GetBytes(StunTarget.User));
        m.WriteAttribute(StunAttributeType.Realm, Encoding.UTF8.GetBytes(StunTarget.Realm));
        m.WriteAttribute(StunAttributeType.Nonce, StunTarget.PlaceholderNonce);
        var key = new byte[32];
        var length = StunCredentials.ComputeLongTermKey(sha256 ? StunPasswordAlgorithm.Sha256 : StunPasswordAlgorithm.Md5, StunTarget.User, StunTarget.Realm, StunTarget.Password, key);
        if (sha256)
        {
            m.WriteMessageIntegritySha256(key.AsSpan(0, length));
        }
        else
        {
            m.WriteMessageIntegrity(key.AsSpan(0, length));
        }

        m.WriteFingerprint();
    });

    private static byte[] Records(params (byte Control, byte[] Bytes)[] records)
    {
        var output = new List<byte>();
        Span<byte> length = stackalloc byte[2];
        foreach (var (control, bytes) in records)
        {
            output.Add(control);
            BinaryPrimitives.WriteUInt16BigEndian(length, (ushort)bytes.Length);
            output.AddRange(length.ToArray());
            output.AddRange(bytes);
        }

        return [.. output];
    }
}
