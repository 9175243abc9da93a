using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>RFC 5769 §2.1-§2.4, parsed, verified and re-encoded.</summary>
public sealed class Rfc5769VectorTests
{
    private static readonly byte[] ShortTermKey = StunCredentials.ComputeShortTermKey(TestVectors.ShortTermPassword);

    private static StunMessage Parse(byte[] bytes)
    {
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(bytes, StunReaderLimits.Default, out var message, out var error));
        Assert.Equal(StunParseError.None, error);
        return message;
    }

    private static void AssertHeader(in StunHeader header, StunClass stunClass, int length, byte[] transactionId)
    {
        Assert.Equal((ushort)StunMethod.Binding, header.Method);
        Assert.Equal(stunClass, header.Class);
        Assert.Equal(StunHeader.ComposeType(StunMethod.Binding, stunClass), header.MessageType);
        Assert.Equal(length, header.Length);
        Assert.Equal(StunConstants.MagicCookie, header.MagicCookie);
        Assert.False(header.IsClassicRfc3489);
        Assert.Equal(TestVectors.TxId(transactionId), header.TransactionId);
    }

    private static List<(ushort Type, int Offset, byte[] Value)> Attributes(StunMessage message)
    {
        var list = new List<(ushort, int, byte[])>();
        foreach (var attribute in message)
        {
            list.Add((attribute.Type, attribute.Offset, attribute.Value.ToArray()));
        }

        return list;
    }

    private static byte[] Value(StunMessage message, StunAttributeType type)
    {
        Assert.True(message.TryGetAttribute(type, out var value), $"{type} missing");
        return value.ToArray();
    }

    [Fact]
    public void ShortTermKey_IsThePasswordBytes()
    {
        // RFC 8489 §9.1.1: the short-term key is the (OpaqueString-prepared) password; this one is ASCII.
        Assert.Equal(Encoding.ASCII.GetBytes(TestVectors.ShortTermPassword), ShortTermKey);
    }

    [Fact]
    public void Section2_1_SampleRequest_ParsesAndVerifies()
    {
        var message = Parse(TestVectors.Rfc5769Request);
        AssertHeader(message.Header, StunClass.Request, 0x58, TestVectors.SampleTransactionId);
        Assert.Equal(6, message.AttributeCount);
        Assert.True(message.HasMessageIntegrity);
        Assert.False(message.HasMessageIntegritySha256);
        Assert.True(message.HasFingerprint);

        var attributes = Attributes(message);
        Assert.Equal(
            new ushort[] { 0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028 },
            attributes.Select(a => a.Type).ToArray());
        Assert.Equal(new[] { 20, 40, 48, 60, 76, 100 }, attributes.Select(a => a.Offset).ToArray());

        Assert.Equal("STUN test client", Encoding.UTF8.GetString(Value(message, StunAttributeType.Software)));
        Assert.True(StunAttributeReader.TryReadUInt32(Value(message, StunAttributeType.Priority), out var priority));
        Assert.Equal(0x6e0001ffu, priority);
        Assert.Equal(TestVectors.Hex("93 2f f9 b1 51 26 3b 36"), Value(message, StunAttributeType.IceControlled));
        Assert.Equal("evtj:h6vY", Encoding.UTF8.GetString(Value(message, StunAttributeType.Username)));
        Assert.Equal(TestVectors.Hex("9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2"), Value(message, StunAttributeType.MessageIntegrity));
        Assert.Equal(TestVectors.Hex("e5 7a 3b cf"), Value(message, StunAttributeType.Fingerprint));

        Assert.True(message.VerifyMessageIntegrity(ShortTermKey));
        Assert.False(message.VerifyMessageIntegrity(Encoding.ASCII.GetBytes("VOkJxbRl1RmTxUk/WvJxBu")));
        Assert.False(message.VerifyMessageIntegrity(ReadOnlySpan<byte>.Empty));
        Assert.False(message.VerifyMessageIntegritySha256(ShortTermKey)); // absent
        Assert.True(message.VerifyFingerprint());

        // The oracles agree with the RFC too, so they can judge the re-encoding below.
        var raw = TestVectors.Rfc5769Request;
        Assert.Equal(Value(message, StunAttributeType.MessageIntegrity), ReferenceCrypto.IntegrityMac(raw.AsSpan(0, 76), 20, ShortTermKey, sha256: false));
        Assert.Equal(0xe57a3bcfu, ReferenceCrypto.Fingerprint(raw.AsSpan(0, 100)));
    }

    [Fact]
    public void Section2_1_SampleRequest_ReEncodes_IdenticalExceptUsernamePadding()
    {
        // RFC 5769 §2.1 pads USERNAME ("evtj:h6vY", 9 bytes) with three 0x20 bytes; RFC 8489 §14 lets
        // senders pad with anything and this writer always pads with zeros. So the re-encoding can only
        // match byte for byte outside those three padding bytes and the two MACs that cover them.
        Span<byte> buffer = stackalloc byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), TestVectors.TxId(TestVectors.SampleTransactionId));
        writer.WriteAttribute(StunAttributeType.Software, "STUN test client"u8);
        writer.WriteUInt32(StunAttributeType.Priority, 0x6e0001ff);
        writer.WriteAttribute(StunAttributeType.IceControlled, TestVectors.Hex("93 2f f9 b1 51 26 3b 36"));
        writer.WriteAttribute(StunAttributeType.Username, "evtj:h6vY"u8);
        writer.WriteMessageIntegrity(ShortTermKey);
        writer.WriteFingerprint();
        var written = writer.Written.ToArray();

        var vector = TestVectors.Rfc5769Request;
        Assert.Equal(vector.Length, written.Length);
        Assert.Equal(vector.AsSpan(0, 73).ToArray(), written.AsSpan(0, 73).ToArray()); // through "evtj:h6vY"
        Assert.Equal(new byte[] { 0, 0, 0 }, written.AsSpan(73, 3).ToArray()); // zero padding, not 0x20
        Assert.Equal(vector.AsSpan(76, 4).ToArray(), written.AsSpan(76, 4).ToArray()); // MI header
        Assert.Equal(vector.AsSpan(100, 4).ToArray(), written.AsSpan(100, 4).ToArray()); // FINGERPRINT header

        // With the vector's padding normalized to zeros, the codec's MAC and CRC match independent oracles...
        var normalized = (byte[])vector.Clone();
        normalized.AsSpan(73, 3).Clear();
        var mac = ReferenceCrypto.IntegrityMac(normalized.AsSpan(0, 76), 20, ShortTermKey, sha256: false);
        Assert.Equal(mac, written.AsSpan(80, 20).ToArray());
        // ...and libwebrtc's independently published value for this zero-padded message (kCalculatedHmac1).
        Assert.Equal(TestVectors.Hex("79 07 c2 d2 ed bf ea 48 0e 4c 76 d8 29 62 d5 c3 74 2a f9 e3"), mac);
        written.AsSpan(0, 100).CopyTo(normalized);
        Assert.Equal(ReferenceCrypto.Fingerprint(normalized.AsSpan(0, 100)), BinaryPrimitives.ReadUInt32BigEndian(written.AsSpan(104)));

        // And the writer's message passes the reader's own checks.
        var reparsed = Parse(written);
        Assert.True(reparsed.VerifyMessageIntegrity(ShortTermKey));
        Assert.True(reparsed.VerifyFingerprint());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Section2_2And2_3_SampleResponses_ParseAndVerify(bool ipv6)
    {
        var bytes = ipv6 ? TestVectors.Rfc5769Ipv6Response : TestVectors.Rfc5769Ipv4Response;
        var message = Parse(bytes);
        AssertHeader(message.Header, StunClass.SuccessResponse, ipv6 ? 0x48 : 0x3c, TestVectors.SampleTransactionId);
        Assert.Equal(4, message.AttributeCount);

        var attributes = Attributes(message);
        Assert.Equal(new ushort[] { 0x8022, 0x0020, 0x0008, 0x8028 }, attributes.Select(a => a.Type).ToArray());

        Assert.Equal("test vector", Encoding.UTF8.GetString(Value(message, StunAttributeType.Software)));
        Assert.True(StunAttributeReader.TryReadXorAddress(Value(message, StunAttributeType.XorMappedAddress), message.Header, out var address));
        var expected = ipv6
            ? new IPEndPoint(IPAddress.Parse("2001:db8:1234:5678:11:2233:4455:6677"), 32853)
            : new IPEndPoint(IPAddress.Parse("192.0.2.1"), 32853);
        Assert.Equal(expected, address.ToIPEndPoint());
        Assert.Equal(StunAddress.FromEndPoint(expected), address);
        Assert.Equal(32853, address.Port);

        // The plain reader must not mistake the XOR'ed bytes for the address.
        Assert.True(StunAttributeReader.TryReadAddress(Value(message, StunAttributeType.XorMappedAddress), out var plain));
        Assert.NotEqual(address, plain);

        Assert.True(message.VerifyMessageIntegrity(ShortTermKey));
        Assert.False(message.VerifyMessageIntegrity("wrong"u8));
        Assert.True(message.VerifyFingerprint());

        var end = bytes.Length;
        Assert.Equal(BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(end - 4)), ReferenceCrypto.Fingerprint(bytes.AsSpan(0, end - 8)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Section2_2And2_3_SampleResponses_ReEncode_IdenticalExceptSoftwarePadding(bool ipv6)
    {
        // SOFTWARE "test vector" is 11 bytes padded with one 0x20; everything else is reproducible.
        var vector = ipv6 ? TestVectors.Rfc5769Ipv6Response : TestVectors.Rfc5769Ipv4Response;
        var endPoint = ipv6
            ? new IPEndPoint(IPAddress.Parse("2001:db8:1234:5678:11:2233:4455:6677"), 32853)
            : new IPEndPoint(IPAddress.Parse("192.0.2.1"), 32853);

        Span<byte> buffer = stackalloc byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), TestVectors.TxId(TestVectors.SampleTransactionId));
        writer.WriteAttribute(StunAttributeType.Software, "test vector"u8);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, StunAddress.FromEndPoint(endPoint));
        var miOffset = writer.Length;
        writer.WriteMessageIntegrity(ShortTermKey);
        var fpOffset = writer.Length;
        writer.WriteFingerprint();
        var written = writer.Written.ToArray();

        Assert.Equal(vector.Length, written.Length);
        Assert.Equal(vector.AsSpan(0, 35).ToArray(), written.AsSpan(0, 35).ToArray());
        Assert.Equal(0, written[35]);
        Assert.Equal(0x20, vector[35]);
        Assert.Equal(vector.AsSpan(36, miOffset - 36 + 4).ToArray(), written.AsSpan(36, miOffset - 36 + 4).ToArray()); // XOR-MAPPED-ADDRESS + MI header

        var normalized = (byte[])vector.Clone();
        normalized[35] = 0;
        var mac = ReferenceCrypto.IntegrityMac(normalized.AsSpan(0, miOffset), 20, ShortTermKey, sha256: false);
        Assert.Equal(mac, written.AsSpan(miOffset + 4, 20).ToArray());
        if (!ipv6)
        {
            // libwebrtc's independently published value for the zero-padded IPv4 response (kCalculatedHmac2).
            Assert.Equal(TestVectors.Hex("5d 6b 58 be ad 94 e0 7e ef 0d fc 12 82 a2 bd 08 43 14 10 28"), mac);
        }

        Assert.Equal(ReferenceCrypto.Fingerprint(written.AsSpan(0, fpOffset)), BinaryPrimitives.ReadUInt32BigEndian(written.AsSpan(fpOffset + 4)));

        // Put the RFC's padding byte back and re-sign with the oracles: the result is the RFC vector exactly,
        // which shows the only difference was the padding choice.
        written[35] = 0x20;
        ReferenceCrypto.IntegrityMac(written.AsSpan(0, miOffset), 20, ShortTermKey, sha256: false).CopyTo(written.AsSpan(miOffset + 4));
        BinaryPrimitives.WriteUInt32BigEndian(written.AsSpan(fpOffset + 4), ReferenceCrypto.Fingerprint(written.AsSpan(0, fpOffset)));
        Assert.Equal(vector, written);
    }

    [Fact]
    public void Section2_4_LongTermKey_IsMd5OfPreparedCredentials()
    {
        // RFC 5769 §2.4: the password "The<U+00AD>M<U+00AA>tr<U+2168>" is "TheMatrIX" after SASLprep.
        Assert.Equal(TestVectors.LongTermPasswordPrepared, StunCredentials.Prepare(TestVectors.LongTermPassword));
        Assert.Equal(TestVectors.LongTermUsername, StunCredentials.Prepare(TestVectors.LongTermUsername));
        Assert.Equal(TestVectors.Realm, StunCredentials.Prepare(TestVectors.Realm));

        var expected = MD5.HashData(Encoding.UTF8.GetBytes("\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:example.org:TheMatrIX"));
        Assert.Equal(expected, TestVectors.Rfc5769LongTermKey());
        Assert.Equal(16, StunCredentials.KeyLength(StunPasswordAlgorithm.Md5));
    }

    [Fact]
    public void Section2_4_LongTermRequest_ParsesAndVerifies()
    {
        var message = Parse(TestVectors.Rfc5769LongTermRequest);
        AssertHeader(message.Header, StunClass.Request, 0x60, TestVectors.LongTermTransactionId);
        Assert.Equal(new ushort[] { 0x0006, 0x0015, 0x0014, 0x0008 }, Attributes(message).Select(a => a.Type).ToArray());

        Assert.Equal(TestVectors.LongTermUsername, Encoding.UTF8.GetString(Value(message, StunAttributeType.Username)));
        Assert.Equal(18, Value(message, StunAttributeType.Username).Length);
        Assert.Equal(TestVectors.Rfc5769Nonce, Encoding.UTF8.GetString(Value(message, StunAttributeType.Nonce)));
        Assert.Equal(TestVectors.Realm, Encoding.UTF8.GetString(Value(message, StunAttributeType.Realm)));

        var key = TestVectors.Rfc5769LongTermKey();
        Assert.True(message.VerifyMessageIntegrity(key));
        Assert.False(message.VerifyMessageIntegrity(MD5.HashData("\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:example.org:TheMatrIXx"u8)));
        Assert.False(message.VerifyMessageIntegrity(ShortTermKey));

        // This vector carries no FINGERPRINT, so there is nothing to verify.
        Assert.False(message.HasFingerprint);
        Assert.False(message.VerifyFingerprint());
    }

    [Fact]
    public void Section2_4_LongTermRequest_ReEncodes_ByteIdentical()
    {
        // Its padding is all zeros, so the writer reproduces it exactly.
        var key = TestVectors.Rfc5769LongTermKey();
        Span<byte> buffer = stackalloc byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), TestVectors.TxId(TestVectors.LongTermTransactionId));
        writer.WriteAttribute(StunAttributeType.Username, Encoding.UTF8.GetBytes(TestVectors.LongTermUsername));
        writer.WriteAttribute(StunAttributeType.Nonce, Encoding.UTF8.GetBytes(TestVectors.Rfc5769Nonce));
        writer.WriteAttribute(StunAttributeType.Realm, Encoding.UTF8.GetBytes(TestVectors.Realm));
        writer.WriteMessageIntegrity(key);
        Assert.Equal(TestVectors.Rfc5769LongTermRequest, writer.Written.ToArray());
    }
}
