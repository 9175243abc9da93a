using System.Buffers;
using System.Buffers.Binary;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>
/// One test (or theory) per rule in StunMessageReader and StunAttributeRules, each naming its RFC section.
/// </summary>
public sealed class ValidationRuleTests
{
    private static readonly StunReaderLimits Limits = StunReaderLimits.Default;

    /// <summary>A Binding request with the given raw attributes, zero-padded, length field set; nothing validated.</summary>
    internal static byte[] Message(params (ushort Type, byte[] Value)[] attributes)
    {
        var body = new List<byte>();
        foreach (var (type, value) in attributes)
        {
            body.Add((byte)(type >> 8));
            body.Add((byte)type);
            body.Add((byte)(value.Length >> 8));
            body.Add((byte)value.Length);
            body.AddRange(value);
            while (body.Count % 4 != 0)
            {
                body.Add(0);
            }
        }

        var header = new byte[20];
        BinaryPrimitives.WriteUInt16BigEndian(header, 0x0001);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(2), (ushort)body.Count);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(4), StunConstants.MagicCookie);
        TestVectors.SampleTransactionId.CopyTo(header, 8);
        return header.Concat(body).ToArray();
    }

    private static (ushort, byte[]) A(StunAttributeType type, byte[] value) => ((ushort)type, value);

    private static (ushort, byte[]) A(StunAttributeType type, int length) => ((ushort)type, new byte[length]);

    private static void AssertValid(byte[] message, StunReaderLimits? limits = null)
    {
        var status = StunMessageReader.TryParse(message, limits ?? Limits, out _, out var error);
        Assert.True(status == OperationStatus.Done, $"expected Done, got {status} {error}");
    }

    private static void AssertInvalid(byte[] message, StunParseError expected, StunReaderLimits? limits = null)
    {
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryParse(message, limits ?? Limits, out _, out var error));
        Assert.Equal(expected, error);
    }

    private static byte[] Address(byte family, int addressLength, byte first = 0)
    {
        var value = new byte[4 + addressLength];
        value[0] = first;
        value[1] = family;
        value[2] = 0x12;
        value[3] = 0x34;
        return value;
    }

    // ---- Header rules, RFC 8489 §5 ----

    [Theory]
    [InlineData(0x40)]
    [InlineData(0x80)]
    [InlineData(0xC0)]
    [InlineData(0xFF)]
    public void Rfc8489_S5_FirstTwoBitsSet_IsNotStun_FromTheFirstByte(byte first)
    {
        // RFC 8489 §5: "The most significant 2 bits of every STUN message MUST be zeroes" (RFC 7983 demux).
        var message = (byte[])TestVectors.Rfc5769Request.Clone();
        message[0] |= first;
        AssertInvalid(message, StunParseError.NotStun);

        for (var length = 1; length <= 4; length++)
        {
            var prefix = message.AsSpan(0, length).ToArray();
            Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryParse(prefix, Limits, out _, out var error));
            Assert.Equal(StunParseError.NotStun, error);

            var buffer = new ReadOnlySequence<byte>(prefix);
            Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryReadMessage(ref buffer, Limits, out _, out error));
            Assert.Equal(StunParseError.NotStun, error);
            Assert.Equal(length, buffer.Length); // not consumed
        }

        Assert.True(StunParseError.NotStun.IsHeaderError());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(0x57)]
    public void Rfc8489_S5_LengthNotMultipleOfFour_IsRejected(ushort length)
    {
        // RFC 8489 §5: the message length MUST contain the size of the message in bytes, not
        // including the header; attributes are padded so it is always a multiple of 4.
        var message = new byte[20 + ((length + 3) & ~3)];
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(0), 0x0001);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(2), length);
        AssertInvalid(message, StunParseError.LengthNotMultipleOfFour);

        var buffer = new ReadOnlySequence<byte>(message.AsMemory(0, 4));
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryReadMessage(ref buffer, Limits, out _, out var error));
        Assert.Equal(StunParseError.LengthNotMultipleOfFour, error);
        Assert.True(error.IsHeaderError());
    }

    [Fact]
    public void TooLarge_IsReportedWithOnlyFourBytes_BeforeAnyBodyIsAwaited()
    {
        // RFC 8489 §6.2.2 framing: a stream reader must not wait for (or buffer) 64 KiB it will refuse.
        var first4 = new byte[] { 0x00, 0x01, 0xFF, 0xFC };
        var buffer = new ReadOnlySequence<byte>(first4);
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryReadMessage(ref buffer, Limits, out _, out var error));
        Assert.Equal(StunParseError.TooLarge, error);
        Assert.Equal(4, buffer.Length);
        Assert.True(error.IsHeaderError());

        // Split across segments too.
        var split = TestSegment.Split(first4, 1, 3);
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryReadMessage(ref split, Limits, out _, out error));
        Assert.Equal(StunParseError.TooLarge, error);
    }

    [Fact]
    public void TooLarge_IsExactlyTheConfiguredBound()
    {
        var limits = new StunReaderLimits { MaxMessageSize = 20 + 8, MaxAttributes = 64 };
        AssertValid(Message(A(StunAttributeType.Software, 4)), limits);
        AssertInvalid(Message(A(StunAttributeType.Software, 5)), StunParseError.TooLarge, limits);
    }

    [Fact]
    public void Datagram_LongerThanDeclared_IsLengthMismatch()
    {
        // A UDP datagram carries exactly one message (RFC 8489 §6.2.1).
        var message = TestVectors.Rfc5769Request.Concat(new byte[4]).ToArray();
        AssertInvalid(message, StunParseError.LengthMismatch);
        Assert.True(StunParseError.LengthMismatch.IsHeaderError());
    }

    [Fact]
    public void ClassicRfc3489Cookie_IsStillParsed()
    {
        // RFC 8489 §5 / Appendix: RFC 3489 clients put random bits where the cookie is; the parser
        // reports it instead of rejecting, so the server can answer with MAPPED-ADDRESS.
        var message = (byte[])TestVectors.Rfc5769Request.Clone();
        message[4] ^= 0xFF;
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message, Limits, out var parsed, out _));
        Assert.True(parsed.Header.IsClassicRfc3489);
    }

    // ---- Attribute walk, RFC 8489 §14 ----

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(0x7FFF)]
    public void Rfc8489_S14_AttributeRunningPastTheEnd_IsAttributeOverflow(int extra)
    {
        // RFC 8489 §14: the value (plus padding to a 4-byte boundary) must fit in the message.
        var message = Message(A(StunAttributeType.Software, 8));
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(22), (ushort)(8 + extra));
        AssertInvalid(message, StunParseError.AttributeOverflow);
        Assert.False(StunParseError.AttributeOverflow.IsHeaderError());
    }

    [Fact]
    public void Rfc8489_S14_AttributeOneByteTooLong_IsAttributeOverflow()
    {
        // 8 bytes of room, a 9-byte value (12 with its padding). Since the message length and every
        // attribute start are multiples of 4, "value fits but padding does not" cannot happen.
        var message = Message(A(StunAttributeType.Software, 8));
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(22), 9);
        AssertInvalid(message, StunParseError.AttributeOverflow);
    }

    [Fact]
    public void Rfc8489_S14_7_FingerprintNotLast_IsRejected()
    {
        // RFC 8489 §14.7: "the FINGERPRINT attribute MUST be the last attribute in the message".
        AssertInvalid(Message(A(StunAttributeType.Fingerprint, 4), A(StunAttributeType.Software, 4)), StunParseError.FingerprintNotLast);
        AssertInvalid(Message(A(StunAttributeType.Fingerprint, 4), A(StunAttributeType.Fingerprint, 4)), StunParseError.FingerprintNotLast);
        AssertValid(Message(A(StunAttributeType.Software, 4), A(StunAttributeType.Fingerprint, 4)));
        Assert.False(StunParseError.FingerprintNotLast.IsHeaderError());
    }

    [Fact]
    public void TooManyAttributes_IsTheConfiguredBound()
    {
        var limits = new StunReaderLimits { MaxMessageSize = 2048, MaxAttributes = 3 };
        var three = Enumerable.Repeat(A(StunAttributeType.Software, 0), 3).ToArray();
        var four = Enumerable.Repeat(A(StunAttributeType.Software, 0), 4).ToArray();
        AssertValid(Message(three), limits);
        AssertInvalid(Message(four), StunParseError.TooManyAttributes, limits);
        Assert.False(StunParseError.TooManyAttributes.IsHeaderError());

        // Attributes ignored after MESSAGE-INTEGRITY still count: the bound is on work, not on meaning.
        var afterIntegrity = Message(A(StunAttributeType.MessageIntegrity, 20), A(StunAttributeType.Software, 0), A(StunAttributeType.Software, 0), A(StunAttributeType.Software, 0));
        AssertInvalid(afterIntegrity, StunParseError.TooManyAttributes, limits);
    }

    [Fact]
    public void DefaultLimits_AcceptMaxAttributesEmptyAttributes_NoMore()
    {
        var limits = StunReaderLimits.Default;
        AssertValid(Message(Enumerable.Repeat(A(StunAttributeType.Software, 0), limits.MaxAttributes).ToArray()));
        AssertInvalid(Message(Enumerable.Repeat(A(StunAttributeType.Software, 0), limits.MaxAttributes + 1).ToArray()), StunParseError.TooManyAttributes);
    }

    // ---- StunAttributeRules ----

    public static TheoryData<StunAttributeType> AddressTypes() => new()
    {
        StunAttributeType.MappedAddress, StunAttributeType.XorMappedAddress, StunAttributeType.AlternateServer,
        StunAttributeType.ResponseOrigin, StunAttributeType.OtherAddress, StunAttributeType.XorPeerAddress,
        StunAttributeType.XorRelayedAddress, StunAttributeType.ResponseAddress, StunAttributeType.SourceAddress,
        StunAttributeType.ChangedAddress, StunAttributeType.ReflectedFrom,
    };

    [Theory]
    [MemberData(nameof(AddressTypes))]
    public void Rfc8489_S14_1_AddressFamilyMustMatchLength(StunAttributeType type)
    {
        // RFC 8489 §14.1/§14.2: family 0x01 carries 32 address bits, 0x02 carries 128.
        AssertValid(Message(A(type, Address(StunAddress.FamilyIPv4, 4))));
        AssertValid(Message(A(type, Address(StunAddress.FamilyIPv6, 16))));
        AssertInvalid(Message(A(type, Address(StunAddress.FamilyIPv6, 4))), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, Address(StunAddress.FamilyIPv4, 16))), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, Address(0x00, 4))), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, Address(0x03, 16))), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, Address(StunAddress.FamilyIPv4, 0))), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, Address(StunAddress.FamilyIPv4, 8))), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, 0)), StunParseError.InvalidAttribute);
        Assert.False(StunParseError.InvalidAttribute.IsHeaderError());
    }

    [Fact]
    public void Rfc8489_S14_1_AddressFirstByteIsIgnored()
    {
        // The first 8 bits "MUST be set to 0 and MUST be ignored by receivers".
        AssertValid(Message(A(StunAttributeType.MappedAddress, Address(StunAddress.FamilyIPv4, 4, first: 0xFF))));
    }

    [Fact]
    public void Rfc8489_S14_3_Username_AtMost512Bytes()
    {
        // RFC 8489 §14.3 says < 509 bytes for senders; RFC 5389 §15.3 said < 513, which receivers keep.
        AssertValid(Message(A(StunAttributeType.Username, 512)));
        AssertInvalid(Message(A(StunAttributeType.Username, 513)), StunParseError.InvalidAttribute);
    }

    [Theory]
    [InlineData(StunAttributeType.Realm)] // RFC 8489 §14.9
    [InlineData(StunAttributeType.Nonce)] // RFC 8489 §14.10
    [InlineData(StunAttributeType.Software)] // RFC 8489 §14.14
    public void Rfc8489_QuotedStrings_AtMost763Bytes(StunAttributeType type)
    {
        AssertValid(Message(A(type, 763)));
        AssertInvalid(Message(A(type, 764)), StunParseError.InvalidAttribute);
    }

    [Fact]
    public void Rfc8489_S14_16_AlternateDomain_AtMost255Bytes()
    {
        AssertValid(Message(A(StunAttributeType.AlternateDomain, 255)));
        AssertInvalid(Message(A(StunAttributeType.AlternateDomain, 256)), StunParseError.InvalidAttribute);
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(31, false)]
    [InlineData(32, true)]
    [InlineData(33, false)]
    public void Rfc8489_S14_4_Userhash_Is32Bytes(int length, bool valid)
    {
        var message = Message(A(StunAttributeType.Userhash, length));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(12, false)]
    [InlineData(19, false)]
    [InlineData(20, true)]
    [InlineData(21, false)]
    [InlineData(32, false)]
    public void Rfc8489_S14_5_MessageIntegrity_Is20Bytes(int length, bool valid)
    {
        var message = Message(A(StunAttributeType.MessageIntegrity, length));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData(12, false)]
    [InlineData(15, false)]
    [InlineData(16, true)]
    [InlineData(18, false)]
    [InlineData(20, true)]
    [InlineData(24, true)]
    [InlineData(28, true)]
    [InlineData(30, false)]
    [InlineData(32, true)]
    [InlineData(33, false)]
    [InlineData(36, false)]
    public void Rfc8489_S14_6_MessageIntegritySha256_16To32BytesInStepsOf4(int length, bool valid)
    {
        // RFC 8489 §14.6: "at least 16 ... MUST NOT exceed 32 ... a multiple of 4".
        var message = Message(A(StunAttributeType.MessageIntegritySha256, length));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData(0, false)]
    [InlineData(3, false)]
    [InlineData(4, true)]
    [InlineData(8, false)]
    public void Rfc8489_S14_7_Fingerprint_Is4Bytes(int length, bool valid)
    {
        var message = Message(A(StunAttributeType.Fingerprint, length));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData(3, 0, true)]
    [InlineData(4, 20, true)]
    [InlineData(6, 99, true)]
    [InlineData(2, 0, false)] // class 2 is success, never an error
    [InlineData(7, 0, false)]
    [InlineData(0, 0, false)]
    [InlineData(4, 100, false)]
    [InlineData(4, 255, false)]
    public void Rfc8489_S14_8_ErrorCode_Class3To6_Number0To99(int errorClass, int number, bool valid)
    {
        var value = new byte[] { 0, 0, (byte)errorClass, (byte)number, (byte)'x' };
        var message = Message(A(StunAttributeType.ErrorCode, value));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Fact]
    public void Rfc8489_S14_8_ErrorCode_ReservedBitsIgnored_ReasonAtMost763Bytes_HeaderAtLeast4()
    {
        // The 21 reserved bits "SHOULD be 0, and are for alignment"; the class is the low 3 bits of byte 2.
        AssertValid(Message(A(StunAttributeType.ErrorCode, new byte[] { 0xFF, 0xFF, 0xF8 | 4, 1 })));
        AssertValid(Message(A(StunAttributeType.ErrorCode, new byte[] { 0, 0, 4, 0 }.Concat(new byte[763]).ToArray())));
        AssertInvalid(Message(A(StunAttributeType.ErrorCode, new byte[] { 0, 0, 4, 0 }.Concat(new byte[764]).ToArray())), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(StunAttributeType.ErrorCode, new byte[] { 0, 0, 4 })), StunParseError.InvalidAttribute);
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(2, true)]
    [InlineData(3, false)]
    [InlineData(6, true)]
    public void Rfc8489_S14_13_UnknownAttributes_IsAListOf16BitTypes(int length, bool valid)
    {
        var message = Message(A(StunAttributeType.UnknownAttributes, length));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData("00 02 00 00", true)]
    [InlineData("00 01 00 00 00 02 00 00", true)]
    [InlineData("00 02 00 03 aa bb cc 00 00 01 00 00", true)] // parameters padded to 4
    [InlineData("00 02 00 03 aa bb cc", true)] // last entry's padding is the attribute's padding
    [InlineData("", false)] // at least one entry
    [InlineData("00 02", false)] // truncated entry header
    [InlineData("00 02 00 04 aa bb", false)] // parameters run past the value
    [InlineData("00 02 00 00 00 01", false)] // trailing partial entry
    public void Rfc8489_S14_11_PasswordAlgorithms_AreWellFormedEntries(string hex, bool valid)
    {
        var message = Message(A(StunAttributeType.PasswordAlgorithms, TestVectors.Hex(hex)));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData("00 02 00 00", true)]
    [InlineData("00 01 00 00", true)]
    [InlineData("00 01 00 00 00 02 00 00", false)] // exactly one entry
    [InlineData("", false)]
    [InlineData("00 02 00", false)]
    public void Rfc8489_S14_12_PasswordAlgorithm_IsExactlyOneEntry(string hex, bool valid)
    {
        var message = Message(A(StunAttributeType.PasswordAlgorithm, TestVectors.Hex(hex)));
        if (valid)
        {
            AssertValid(message);
        }
        else
        {
            AssertInvalid(message, StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData(StunAttributeType.ChangeRequest)] // RFC 5780 §7.2
    [InlineData(StunAttributeType.ResponsePort)] // RFC 5780 §7.5
    [InlineData(StunAttributeType.ChannelNumber)] // RFC 8656 §18.1
    [InlineData(StunAttributeType.Lifetime)] // RFC 8656 §18.2
    [InlineData(StunAttributeType.RequestedTransport)] // RFC 8656 §18.7
    [InlineData(StunAttributeType.RequestedAddressFamily)] // RFC 8656 §18.4
    [InlineData(StunAttributeType.AdditionalAddressFamily)] // RFC 8656 §18.11
    [InlineData(StunAttributeType.ConnectionId)] // RFC 6062 §6.2.1
    [InlineData(StunAttributeType.Priority)] // RFC 8445 §16.1
    public void FixedSize32BitAttributes_AreExactly4Bytes(StunAttributeType type)
    {
        AssertValid(Message(A(type, 4)));
        AssertInvalid(Message(A(type, 0)), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, 3)), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, 5)), StunParseError.InvalidAttribute);
        AssertInvalid(Message(A(type, 8)), StunParseError.InvalidAttribute);
    }

    [Theory]
    [InlineData(StunAttributeType.EvenPort, 1)] // RFC 8656 §18.6
    [InlineData(StunAttributeType.DontFragment, 0)] // RFC 8656 §18.8
    [InlineData(StunAttributeType.UseCandidate, 0)] // RFC 8445 §16.1
    [InlineData(StunAttributeType.ReservationToken, 8)] // RFC 8656 §18.9
    [InlineData(StunAttributeType.IceControlled, 8)] // RFC 8445 §16.1
    [InlineData(StunAttributeType.IceControlling, 8)] // RFC 8445 §16.1
    public void OtherFixedSizeAttributes_HaveTheirExactSize(StunAttributeType type, int size)
    {
        AssertValid(Message(A(type, size)));
        AssertInvalid(Message(A(type, size + 1)), StunParseError.InvalidAttribute);
        if (size > 0)
        {
            AssertInvalid(Message(A(type, size - 1)), StunParseError.InvalidAttribute);
        }
    }

    [Theory]
    [InlineData((ushort)0x0000)]
    [InlineData((ushort)0x002F)]
    [InlineData((ushort)0x7FFF)]
    [InlineData((ushort)0x8005)]
    [InlineData((ushort)0xFFFF)]
    [InlineData((ushort)StunAttributeType.Padding)] // RFC 5780 §7.6: any length
    [InlineData((ushort)StunAttributeType.Data)] // RFC 8656 §18.10: any length
    public void UnknownOrFreeFormAttributes_AcceptAnyLength(ushort type)
    {
        foreach (var length in new[] { 0, 1, 3, 7, 1000 })
        {
            AssertValid(Message((type, new byte[length])));
        }
    }

    // ---- RFC 8489 §14.5/§14.6: what follows an integrity attribute ----

    [Fact]
    public void Rfc8489_S14_5_AttributesAfterMessageIntegrity_AreIgnored_ExceptSha256AndFingerprint()
    {
        // RFC 8489 §14.5: "agents MUST ignore all other attributes that follow MESSAGE-INTEGRITY",
        // except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
        var message = Message(
            A(StunAttributeType.Username, "u"u8.ToArray()),
            A(StunAttributeType.MessageIntegrity, 20),
            A(StunAttributeType.Software, "ignored"u8.ToArray()),
            A(StunAttributeType.Username, "ignored"u8.ToArray()),
            ((ushort)0x0FFF, new byte[4]), // unknown comprehension-required, also ignored
            A(StunAttributeType.MessageIntegritySha256, 32),
            A(StunAttributeType.Realm, "ignored"u8.ToArray()),
            A(StunAttributeType.Fingerprint, 4));
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message, Limits, out var parsed, out _));
        Assert.Equal(8, parsed.AttributeCount);

        var processed = new List<ushort>();
        foreach (var attribute in parsed)
        {
            processed.Add(attribute.Type);
        }

        Assert.Equal(new ushort[] { 0x0006, 0x0008, 0x001C, 0x8028 }, processed.ToArray());

        var all = new List<ushort>();
        foreach (var attribute in parsed.EnumerateAll())
        {
            all.Add(attribute.Type);
        }

        Assert.Equal(new ushort[] { 0x0006, 0x0008, 0x8022, 0x0006, 0x0FFF, 0x001C, 0x0014, 0x8028 }, all.ToArray());

        Assert.False(parsed.HasAttribute(StunAttributeType.Software));
        Assert.False(parsed.HasAttribute(StunAttributeType.Realm));
        Assert.True(parsed.TryGetAttribute(StunAttributeType.Username, out var username));
        Assert.Equal("u"u8.ToArray(), username.ToArray());
        Assert.True(parsed.HasMessageIntegrity);
        Assert.True(parsed.HasMessageIntegritySha256);
        Assert.True(parsed.HasFingerprint);

        Span<ushort> unknown = stackalloc ushort[4];
        Assert.Equal(0, parsed.CollectUnknownComprehensionRequired(new ushort[] { 0x0006, 0x0008, 0x001C }, unknown));
    }

    [Fact]
    public void Rfc8489_S14_6_MessageIntegrityAfterSha256_IsIgnored()
    {
        // RFC 8489 §14.6: after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT may follow; a later
        // MESSAGE-INTEGRITY is ignored (a downgrade to SHA-1 must not be possible).
        var message = Message(
            A(StunAttributeType.MessageIntegritySha256, 32),
            A(StunAttributeType.MessageIntegrity, 20),
            A(StunAttributeType.Fingerprint, 4));
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message, Limits, out var parsed, out _));
        Assert.True(parsed.HasMessageIntegritySha256);
        Assert.False(parsed.HasMessageIntegrity);
        Assert.False(parsed.HasAttribute(StunAttributeType.MessageIntegrity));
        Assert.False(parsed.VerifyMessageIntegrity(new byte[16]));
    }

    [Fact]
    public void Rfc8489_S14_DuplicateAttributes_FirstOneWins()
    {
        // RFC 8489 §14: "any attribute ... after the first ... MAY be ignored"; TryGetAttribute returns the first.
        var message = Message(A(StunAttributeType.Software, "first"u8.ToArray()), A(StunAttributeType.Software, "second"u8.ToArray()));
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message, Limits, out var parsed, out _));
        Assert.True(parsed.TryGetAttribute(StunAttributeType.Software, out var value));
        Assert.Equal("first"u8.ToArray(), value.ToArray());
    }

    [Fact]
    public void Rfc8489_S6_3_1_1_UnknownComprehensionRequired_AreCollectedOnce()
    {
        // RFC 8489 §6.3.1.1: unknown 0x0000-0x7FFF attributes get a 420 listing them; 0x8000+ are ignored.
        var message = Message(
            ((ushort)0x7F01, new byte[1]),
            ((ushort)0x8F01, new byte[1]),
            ((ushort)0x7F02, new byte[1]),
            ((ushort)0x7F01, new byte[1]),
            A(StunAttributeType.Software, 1),
            A(StunAttributeType.Username, 1));
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message, Limits, out var parsed, out _));
        Span<ushort> unknown = stackalloc ushort[8];
        var count = parsed.CollectUnknownComprehensionRequired(new ushort[] { (ushort)StunAttributeType.Username }, unknown);
        Assert.Equal(new ushort[] { 0x7F01, 0x7F02 }, unknown[..count].ToArray());

        Span<ushort> one = stackalloc ushort[1];
        Assert.Equal(1, parsed.CollectUnknownComprehensionRequired(new ushort[] { (ushort)StunAttributeType.Username }, one));
        Assert.Equal(0x7F01, one[0]);

        Assert.True(StunAttributeTypes.IsComprehensionRequired(0x7FFF));
        Assert.False(StunAttributeTypes.IsComprehensionRequired(0x8000));
    }

    [Fact]
    public void VerifyOnMessageWithoutTheAttributes_IsFalse()
    {
        var message = Message(A(StunAttributeType.Software, 4));
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message, Limits, out var parsed, out _));
        Assert.False(parsed.VerifyFingerprint());
        Assert.False(parsed.VerifyMessageIntegrity(new byte[16]));
        Assert.False(parsed.VerifyMessageIntegritySha256(new byte[32]));
    }

    [Fact]
    public void Rfc8489_S14_5_IntegrityOverALargeMessage_UsesThePooledPath()
    {
        // Messages over the 1536-byte stack-copy limit are hashed from a pooled buffer; same answers.
        var key = new byte[] { 7, 7, 7 };
        var buffer = new byte[4096];
        var writer = new StunMessageWriter(buffer, 0x0001, TestVectors.TxId(TestVectors.SampleTransactionId));
        writer.WriteAttribute((ushort)0x8FFF, new byte[2000]);
        writer.WriteMessageIntegrity(key);
        writer.WriteMessageIntegritySha256(key);
        writer.WriteFingerprint();
        var bytes = writer.Written.ToArray();
        var limits = new StunReaderLimits { MaxMessageSize = 4096, MaxAttributes = 8 };
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(bytes, limits, out var parsed, out _));
        Assert.True(parsed.VerifyMessageIntegrity(key));
        Assert.True(parsed.VerifyMessageIntegritySha256(key));
        Assert.True(parsed.VerifyFingerprint());
        Assert.Equal(ReferenceCrypto.IntegrityMac(bytes.AsSpan(0, 2024), 20, key, sha256: false), bytes.AsSpan(2028, 20).ToArray());
    }

    [Fact]
    public void StunHeader_MethodAndClass_InterleaveAsRfc8489Figure3()
    {
        // RFC 8489 §5, Figure 3: M11-M7 C1 M6-M4 C0 M3-M0.
        Assert.Equal(0x0001, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request));
        Assert.Equal(0x0011, StunHeader.ComposeType(StunMethod.Binding, StunClass.Indication));
        Assert.Equal(0x0101, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse));
        Assert.Equal(0x0111, StunHeader.ComposeType(StunMethod.Binding, StunClass.ErrorResponse));
        Assert.Equal(0x0113, StunHeader.ComposeType(StunMethod.Allocate, StunClass.ErrorResponse));
        for (var method = 0; method < 0x1000; method++)
        {
            for (var c = 0; c < 4; c++)
            {
                var type = StunHeader.ComposeType((ushort)method, (StunClass)c);
                Assert.Equal(0, type & 0xC000);
                Assert.Equal(method, StunHeader.GetMethod(type));
                Assert.Equal((StunClass)c, StunHeader.GetClass(type));
            }
        }
    }
}
