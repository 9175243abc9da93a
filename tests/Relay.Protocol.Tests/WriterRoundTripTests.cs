using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>Every <see cref="StunMessageWriter"/> method, read back through the reader and the typed readers.</summary>
public sealed class WriterRoundTripTests
{
    private static readonly StunTransactionId TxId = TestVectors.TxId(TestVectors.SampleTransactionId);
    private static readonly ushort BindingSuccess = StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse);

    /// <summary>A destination pre-filled with 0xAA, so that stale bytes left in padding would show.</summary>
    private static byte[] NewBuffer(int size = 1024)
    {
        var buffer = new byte[size];
        buffer.AsSpan().Fill(0xAA);
        return buffer;
    }

    private static StunMessageWriter NewWriter(byte[] buffer, ushort type = 0, uint cookie = StunConstants.MagicCookie) =>
        new(buffer, type == 0 ? BindingSuccess : type, TxId, cookie);

    /// <summary>Copies out what was written and checks the framing every message must have.</summary>
    private static byte[] Finish(ReadOnlySpan<byte> written)
    {
        var bytes = written.ToArray();

        // RFC 8489 §5: the length field counts everything after the header and is a multiple of 4.
        Assert.Equal(bytes.Length - 20, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(2)));
        Assert.Equal(0, bytes.Length % 4);
        AssertPaddingIsZero(bytes);
        return bytes;
    }

    private static void AssertPaddingIsZero(byte[] message)
    {
        var offset = 20;
        while (offset < message.Length)
        {
            var length = BinaryPrimitives.ReadUInt16BigEndian(message.AsSpan(offset + 2));
            var padded = (length + 3) & ~3;
            for (var i = length; i < padded; i++)
            {
                Assert.Equal(0, message[offset + 4 + i]);
            }

            offset += 4 + padded;
        }

        Assert.Equal(message.Length, offset);
    }

    private static StunMessage Parse(byte[] bytes)
    {
        var status = StunMessageReader.TryParse(bytes, StunReaderLimits.Default, out var message, out var error);
        Assert.True(status == OperationStatus.Done, $"{status} {error}");
        return message;
    }

    [Fact]
    public void Header_IsWritten_AndEmptyMessageParses()
    {
        var writer = NewWriter(NewBuffer(), type: StunHeader.ComposeType(StunMethod.Allocate, StunClass.ErrorResponse));
        var bytes = Finish(writer.Written);
        Assert.Equal(20, bytes.Length);
        var message = Parse(bytes);
        Assert.Equal((ushort)StunMethod.Allocate, message.Header.Method);
        Assert.Equal(StunClass.ErrorResponse, message.Header.Class);
        Assert.Equal(TxId, message.Header.TransactionId);
        Assert.Equal(0, message.AttributeCount);
        Assert.False(message.GetEnumerator().MoveNext());
    }

    [Fact]
    public void ClassicCookie_IsEchoed()
    {
        // RFC 8489 §5/Appendix: a response to an RFC 3489 request echoes its first id word in the cookie slot.
        var buffer = NewBuffer();
        var writer = NewWriter(buffer, cookie: 0x01020304);
        writer.WriteAttribute(StunAttributeType.Software, "x"u8);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.Equal(0x01020304u, message.Header.MagicCookie);
        Assert.True(message.Header.IsClassicRfc3489);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(763)]
    public void WriteAttribute_OpaqueValue_RoundTrips_WithZeroPadding(int length)
    {
        var value = Enumerable.Range(1, length).Select(i => (byte)i).ToArray();
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteAttribute(StunAttributeType.Software, value);
        var bytes = Finish(writer.Written);
        Assert.Equal(20 + 4 + ((length + 3) & ~3), bytes.Length);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.Software, out var read));
        Assert.Equal(value, read.ToArray());
    }

    [Fact]
    public void WriteAttribute_RawType_PassesThroughUnknownTypes()
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteAttribute((ushort)0x7F01, new byte[] { 1, 2, 3 });
        writer.WriteAttribute((ushort)0xC001, ReadOnlySpan<byte>.Empty);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute((StunAttributeType)0x7F01, out var a));
        Assert.Equal(new byte[] { 1, 2, 3 }, a.ToArray());
        Assert.True(message.TryGetAttribute((StunAttributeType)0xC001, out var b));
        Assert.True(b.IsEmpty);
    }

    [Theory]
    [InlineData(StunAttributeType.Lifetime, 0u)]
    [InlineData(StunAttributeType.Lifetime, 600u)]
    [InlineData(StunAttributeType.Priority, 0x6e0001ffu)]
    [InlineData(StunAttributeType.ConnectionId, uint.MaxValue)]
    [InlineData(StunAttributeType.RequestedTransport, 0x11000000u)]
    public void WriteUInt32_RoundTrips(StunAttributeType type, uint value)
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteUInt32(type, value);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(type, out var read));
        Assert.True(StunAttributeReader.TryReadUInt32(read, out var result));
        Assert.Equal(value, result);
    }

    public static TheoryData<string, int> EndPoints() => new()
    {
        { "0.0.0.0", 0 },
        { "192.0.2.1", 32853 },
        { "255.255.255.255", 65535 },
        { "::", 1 },
        { "2001:db8:1234:5678:11:2233:4455:6677", 32853 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535 },
        { "fe80::1", 3478 },
    };

    [Theory]
    [MemberData(nameof(EndPoints))]
    public void WriteAddress_RoundTrips(string ip, int port)
    {
        var address = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse(ip), port));
        foreach (var type in new[] { StunAttributeType.MappedAddress, StunAttributeType.AlternateServer, StunAttributeType.ResponseOrigin, StunAttributeType.OtherAddress })
        {
            var buffer = NewBuffer();
            var writer = NewWriter(buffer);
            writer.WriteAddress(type, address);
            var bytes = Finish(writer.Written);
            var message = Parse(bytes);
            Assert.True(message.TryGetAttribute(type, out var value));
            Assert.Equal(address.IsIPv4 ? 8 : 20, value.Length);
            Assert.Equal(0, value[0]);
            Assert.True(StunAttributeReader.TryReadAddress(value, out var read));
            Assert.Equal(address, read);
            Assert.Equal(new IPEndPoint(IPAddress.Parse(ip), port), read.ToIPEndPoint());
        }
    }

    [Theory]
    [MemberData(nameof(EndPoints))]
    public void WriteXorAddress_RoundTrips_IPv4AndIPv6(string ip, int port)
    {
        var address = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse(ip), port));
        foreach (var type in new[] { StunAttributeType.XorMappedAddress, StunAttributeType.XorPeerAddress, StunAttributeType.XorRelayedAddress })
        {
            var buffer = NewBuffer();
            var writer = NewWriter(buffer);
            writer.WriteXorAddress(type, address);
            var bytes = Finish(writer.Written);
            var message = Parse(bytes);
            Assert.True(message.TryGetAttribute(type, out var value));
            Assert.Equal(address.IsIPv4 ? StunAddress.FamilyIPv4 : StunAddress.FamilyIPv6, value[1]);
            Assert.Equal((ushort)(port ^ 0x2112), BinaryPrimitives.ReadUInt16BigEndian(value[2..]));
            Assert.True(StunAttributeReader.TryReadXorAddress(value, message.Header, out var read));
            Assert.Equal(address, read);

            // The XOR really uses the cookie (and, for IPv6, the transaction id): a different id changes IPv6 only.
            var other = new StunHeader(message.Header.MessageType, message.Header.Length, message.Header.MagicCookie, StunTransactionId.Read(new byte[12]));
            Assert.True(StunAttributeReader.TryReadXorAddress(value, other, out var withOtherId));
            Assert.Equal(address.IsIPv4, withOtherId == address);
        }
    }

    [Fact]
    public void IPv4MappedIPv6EndPoint_IsWrittenAsIPv4()
    {
        var mapped = new IPEndPoint(IPAddress.Parse("::ffff:192.0.2.1"), 32853);
        var address = StunAddress.FromEndPoint(mapped);
        Assert.True(address.IsIPv4);
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, address);
        var bytes = Finish(writer.Written);
        Assert.Equal(TestVectors.Hex("00 20 00 08 00 01 a1 47 e1 12 a6 43"), bytes.AsSpan(20).ToArray());
    }

    [Theory]
    [InlineData(300, "Try Alternate")]
    [InlineData(400, "Bad Request")]
    [InlineData(401, "Unauthorized")]
    [InlineData(420, "Unknown Attribute")]
    [InlineData(438, "Stale Nonce")]
    [InlineData(500, "Server Error")]
    [InlineData(699, "")]
    [InlineData(600, "x")]
    public void WriteErrorCode_RoundTrips_AtTheEdges(int code, string reason)
    {
        var reasonBytes = System.Text.Encoding.UTF8.GetBytes(reason);
        var buffer = NewBuffer();
        var writer = NewWriter(buffer, type: StunHeader.ComposeType(StunMethod.Binding, StunClass.ErrorResponse));
        writer.WriteErrorCode(code, reasonBytes);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.ErrorCode, out var value));
        Assert.Equal(0, value[0]);
        Assert.Equal(0, value[1]);
        Assert.Equal(code / 100, value[2]);
        Assert.Equal(code % 100, value[3]);
        Assert.True(StunAttributeReader.TryReadErrorCode(value, out var readCode, out var readReason));
        Assert.Equal(code, readCode);
        Assert.Equal(reasonBytes, readReason.ToArray());
    }

    [Theory]
    [InlineData(299)]
    [InlineData(700)]
    [InlineData(0)]
    [InlineData(-1)]
    public void WriteErrorCode_OutsideRfcRange_Throws(int code)
    {
        var buffer = new byte[64];
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            var writer = new StunMessageWriter(buffer, BindingSuccess, TxId);
            writer.WriteErrorCode(code, "x"u8);
        });
    }

    [Fact]
    public void WriteErrorCode_ReasonOver763Bytes_Throws()
    {
        var buffer = new byte[2048];
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            var writer = new StunMessageWriter(buffer, BindingSuccess, TxId);
            writer.WriteErrorCode(400, new byte[764]);
        });
    }

    [Theory]
    [InlineData(new ushort[] { })]
    [InlineData(new ushort[] { 0x0001 })]
    [InlineData(new ushort[] { 0x0001, 0x7FFF })]
    [InlineData(new ushort[] { 0x0001, 0x0002, 0x0003 })]
    public void WriteUnknownAttributes_RoundTrips(ushort[] types)
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer, type: StunHeader.ComposeType(StunMethod.Binding, StunClass.ErrorResponse));
        writer.WriteUnknownAttributes(types);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.UnknownAttributes, out var value));
        Assert.Equal(types.Length * 2, value.Length);
        var read = new ushort[8];
        var count = StunAttributeReader.ReadUnknownAttributes(value, read);
        Assert.Equal(types, read.AsSpan(0, count).ToArray());

        // A destination that is too small gets a prefix.
        var small = new ushort[1];
        Assert.Equal(Math.Min(1, types.Length), StunAttributeReader.ReadUnknownAttributes(value, small));
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void WriteChangeRequest_RoundTrips(bool changeIp, bool changePort)
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteChangeRequest(changeIp, changePort);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.ChangeRequest, out var value));
        Assert.True(StunAttributeReader.TryReadChangeRequest(value, out var ip, out var port));
        Assert.Equal(changeIp, ip);
        Assert.Equal(changePort, port);
        Assert.Equal((changeIp ? 4u : 0) | (changePort ? 2u : 0), BinaryPrimitives.ReadUInt32BigEndian(value));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3478)]
    [InlineData(65535)]
    public void WriteResponsePort_RoundTrips(int port)
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteResponsePort((ushort)port);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.ResponsePort, out var value));
        Assert.True(StunAttributeReader.TryReadResponsePort(value, out var read));
        Assert.Equal(port, read);
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(value[2..])); // RFC 5780 §7.5 padding
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(1000)]
    public void WritePadding_IsAllZero(int length)
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WritePadding(length);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.Padding, out var value));
        Assert.Equal(length, value.Length);
        Assert.True(value.IndexOfAnyExcept((byte)0) < 0);
    }

    [Theory]
    [InlineData(StunPasswordAlgorithm.Md5)]
    [InlineData(StunPasswordAlgorithm.Sha256)]
    public void WritePasswordAlgorithm_RoundTrips(StunPasswordAlgorithm algorithm)
    {
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WritePasswordAlgorithm(algorithm);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.PasswordAlgorithm, out var value));
        Assert.True(StunAttributeReader.TryReadPasswordAlgorithm(value, out var read, out var parameters));
        Assert.Equal(algorithm, read);
        Assert.True(parameters.IsEmpty);
    }

    [Fact]
    public void WritePasswordAlgorithms_RoundTrips_InOrder()
    {
        var algorithms = new[] { StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5 };
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WritePasswordAlgorithms(algorithms);
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.PasswordAlgorithms, out var value));
        var offset = 0;
        var read = new List<StunPasswordAlgorithm>();
        while (StunAttributeReader.TryReadPasswordAlgorithmEntry(value, ref offset, out var algorithm, out var parameters))
        {
            Assert.True(parameters.IsEmpty);
            read.Add(algorithm);
        }

        Assert.Equal(algorithms, read);
        Assert.Equal(value.Length, offset);
    }

    [Fact]
    public void MessageIntegrity_ThenSha256_ThenFingerprint_AllVerify()
    {
        // RFC 8489 §14.5-§14.7: MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY-SHA256, then FINGERPRINT last.
        var key = TestVectors.Rfc8489LongTermKey();
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteAttribute(StunAttributeType.Username, "user"u8);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Loopback, 9)));
        writer.WriteMessageIntegrity(key);
        writer.WriteMessageIntegritySha256(key);
        writer.WriteFingerprint();
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.HasMessageIntegrity);
        Assert.True(message.HasMessageIntegritySha256);
        Assert.True(message.HasFingerprint);
        Assert.True(message.VerifyMessageIntegrity(key));
        Assert.True(message.VerifyMessageIntegritySha256(key));
        Assert.True(message.VerifyFingerprint());

        // Independent oracles over the same bytes.
        var mi = 20 + 8 + 12;
        Assert.Equal(ReferenceCrypto.IntegrityMac(bytes.AsSpan(0, mi), 20, key, sha256: false), bytes.AsSpan(mi + 4, 20).ToArray());
        var mi256 = mi + 24;
        Assert.Equal(ReferenceCrypto.IntegrityMac(bytes.AsSpan(0, mi256), 32, key, sha256: true), bytes.AsSpan(mi256 + 4, 32).ToArray());
        var fp = mi256 + 36;
        Assert.Equal(ReferenceCrypto.Fingerprint(bytes.AsSpan(0, fp)), BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(fp + 4)));

        // Any flipped bit before a MAC breaks that MAC (and the fingerprint).
        for (var i = 0; i < mi; i++)
        {
            var tampered = (byte[])bytes.Clone();
            tampered[i] ^= 0x01;
            if (StunMessageReader.TryParse(tampered, StunReaderLimits.Default, out var t, out _) == OperationStatus.Done)
            {
                Assert.False(t.VerifyMessageIntegrity(key), $"byte {i}");
                Assert.False(t.VerifyMessageIntegritySha256(key), $"byte {i}");
                Assert.False(t.VerifyFingerprint(), $"byte {i}");
            }
        }
    }

    [Theory]
    [InlineData(16)]
    [InlineData(20)]
    [InlineData(24)]
    [InlineData(28)]
    [InlineData(32)]
    public void MessageIntegritySha256_Truncated_Verifies(int length)
    {
        // RFC 8489 §14.6: the HMAC may be truncated to 16..32 bytes in steps of 4.
        var key = new byte[] { 1, 2, 3 };
        var buffer = NewBuffer();
        var writer = NewWriter(buffer);
        writer.WriteAttribute(StunAttributeType.Software, "abc"u8);
        writer.WriteMessageIntegritySha256(key, length);
        writer.WriteFingerprint();
        var bytes = Finish(writer.Written);
        var message = Parse(bytes);
        Assert.True(message.TryGetAttribute(StunAttributeType.MessageIntegritySha256, out var value));
        Assert.Equal(length, value.Length);
        Assert.True(message.VerifyMessageIntegritySha256(key));
        Assert.False(message.VerifyMessageIntegritySha256(new byte[] { 1, 2, 4 }));
        Assert.True(message.VerifyFingerprint());
        Assert.Equal(ReferenceCrypto.IntegrityMac(bytes.AsSpan(0, 28), length, key, sha256: true).AsSpan(0, length).ToArray(), value.ToArray());
    }

    [Theory]
    [InlineData(12)]
    [InlineData(15)]
    [InlineData(18)]
    [InlineData(33)]
    [InlineData(36)]
    public void MessageIntegritySha256_BadTruncation_Throws(int length)
    {
        var buffer = new byte[256];
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            var writer = new StunMessageWriter(buffer, BindingSuccess, TxId);
            writer.WriteMessageIntegritySha256(new byte[] { 1 }, length);
        });
    }

    [Fact]
    public void LengthField_TracksEveryAttribute()
    {
        var buffer = new byte[256];
        var writer = new StunMessageWriter(buffer, BindingSuccess, TxId);
        Assert.Equal(20, writer.Length);
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(2)));
        writer.WriteAttribute(StunAttributeType.Software, "abcde"u8);
        Assert.Equal(32, writer.Length);
        Assert.Equal(12, BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(2)));
        writer.WriteFingerprint();
        Assert.Equal(40, writer.Length);
        Assert.Equal(20, BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(2)));
        Assert.Equal(writer.Length, writer.Written.Length);
    }

    [Fact]
    public void DestinationTooSmall_Throws_AndNeverWritesPastIt()
    {
        Assert.Throws<ArgumentException>(() => new StunMessageWriter(new byte[19], BindingSuccess, TxId));

        var buffer = new byte[40];
        Assert.Throws<ArgumentException>(() =>
        {
            var writer = new StunMessageWriter(buffer.AsSpan(0, 30), BindingSuccess, TxId);
            writer.WriteAttribute(StunAttributeType.Software, "0123456789"u8); // needs 4 + 12 = 16 > 10
        });
        Assert.True(buffer.AsSpan(30).IndexOfAnyExcept((byte)0) < 0);

        // Exactly enough room works.
        var exact = new byte[20 + 4 + 12];
        var fits = new StunMessageWriter(exact, BindingSuccess, TxId);
        fits.WriteAttribute(StunAttributeType.Software, "0123456789"u8);
        Assert.Equal(exact.Length, fits.Length);
    }

    [Fact]
    public void MessageLongerThan65535_Throws()
    {
        var buffer = new byte[70000];
        Assert.Throws<ArgumentException>(() =>
        {
            var writer = new StunMessageWriter(buffer, BindingSuccess, TxId);
            writer.WriteAttribute((ushort)0x7F00, new byte[65532]);
        });
    }
}
