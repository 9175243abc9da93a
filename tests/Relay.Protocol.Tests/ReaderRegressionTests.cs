using System.Buffers;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>
/// Regression tests for codec defects this suite found. Each failed against the first version of the
/// codec and stays to keep the fix.
/// </summary>
public sealed class ReaderRegressionTests
{
    /// <summary>
    /// Was: with fewer than 4 bytes buffered, TryReadMessage read <c>buffer.FirstSpan[0]</c>; a
    /// <see cref="ReadOnlySequence{T}"/> may legally start with an empty segment (FirstSpan empty while
    /// Length is 1..3), so it threw IndexOutOfRangeException instead of returning a status.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void TryReadMessage_ShortBufferBehindAnEmptyFirstSegment_ReturnsAStatusInsteadOfThrowing(int length)
    {
        var vector = TestVectors.Rfc5769Request;
        var buffer = TestSegment.Sequence(ReadOnlyMemory<byte>.Empty, vector.AsMemory(0, length));
        Assert.Equal(length, buffer.Length);
        Assert.True(buffer.FirstSpan.IsEmpty);

        var status = StunMessageReader.TryReadMessage(ref buffer, StunReaderLimits.Default, out _, out var error);
        Assert.Equal(OperationStatus.NeedMoreData, status);
        Assert.Equal(StunParseError.None, error);

        var garbage = TestSegment.Sequence(ReadOnlyMemory<byte>.Empty, new byte[] { 0xC0 });
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryReadMessage(ref garbage, StunReaderLimits.Default, out _, out error));
        Assert.Equal(StunParseError.NotStun, error);
    }

    /// <summary>
    /// Was: TryParse, documented to return NeedMoreData only "for a strict prefix of a message", checked
    /// only the first byte of 4..19-byte input, so a length field that is not a multiple of four or
    /// exceeds MaxMessageSize came back as NeedMoreData while TryReadMessage rejected the same bytes.
    /// </summary>
    [Theory]
    [InlineData(4, 0x0003, StunParseError.LengthNotMultipleOfFour)]
    [InlineData(19, 0x0003, StunParseError.LengthNotMultipleOfFour)]
    [InlineData(4, 0xFFFC, StunParseError.TooLarge)]
    [InlineData(12, 0xFFFC, StunParseError.TooLarge)]
    public void TryParse_MalformedHeaderPrefix_IsInvalidData_LikeTryReadMessage(int available, ushort lengthField, StunParseError expected)
    {
        var bytes = new byte[available];
        bytes[1] = 0x01;
        bytes[2] = (byte)(lengthField >> 8);
        bytes[3] = (byte)lengthField;

        var sequence = new ReadOnlySequence<byte>(bytes);
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryReadMessage(ref sequence, StunReaderLimits.Default, out _, out var streamError));
        Assert.Equal(expected, streamError);

        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryParse(bytes, StunReaderLimits.Default, out _, out var datagramError));
        Assert.Equal(expected, datagramError);
    }

    /// <summary>
    /// Was (StunMessage.cs Has* and Verify*): "absent" is
    /// encoded as offset -1 (<c>StunMessageLayout.Empty</c>), but the <see cref="StunMessage"/> that
    /// TryParse hands back through <c>out</c> on NeedMoreData/InvalidData is <c>default</c>, whose offsets
    /// are 0. So after a failed parse the message claims HasFingerprint, HasMessageIntegrity and
    /// HasMessageIntegritySha256 are all true, and VerifyFingerprint / VerifyMessageIntegrity /
    /// VerifyMessageIntegritySha256 throw ArgumentOutOfRangeException (they slice Raw[4..] of an empty
    /// span) instead of returning false as documented ("False if absent or wrong").
    /// Fixed by testing presence with <c>offset &gt;= StunConstants.HeaderLength</c>: attribute offsets are
    /// never below the header, so both -1 and the default 0 mean "absent".
    /// </summary>
    [Fact]
    public void MessageFromAFailedParse_HasNoIntegrityOrFingerprint_AndVerifyReturnsFalse()
    {
        var truncated = TestVectors.Rfc5769Request.AsSpan(0, 30).ToArray();
        Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryParse(truncated, StunReaderLimits.Default, out var message, out _));
        AssertEmpty(message);

        var garbage = new byte[] { 0xFF, 0xFF, 0xFF, 0xFF };
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryParse(garbage, StunReaderLimits.Default, out var fromGarbage, out _));
        AssertEmpty(fromGarbage);

        AssertEmpty(default);
    }

    private static void AssertEmpty(StunMessage message)
    {
        Assert.Equal(0, message.AttributeCount);
        Assert.False(message.HasAttribute(StunAttributeType.Fingerprint));
        Assert.False(message.HasFingerprint);
        Assert.False(message.HasMessageIntegrity);
        Assert.False(message.HasMessageIntegritySha256);
        Assert.False(message.VerifyFingerprint());
        Assert.False(message.VerifyMessageIntegrity(new byte[16]));
        Assert.False(message.VerifyMessageIntegritySha256(new byte[32]));
    }

    /// <summary>
    /// RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY (other than MESSAGE-INTEGRITY-SHA256 and
    /// FINGERPRINT) MUST be ignored, so a malformed one there must not make the message invalid.
    /// Was: it was validated and rejected as InvalidAttribute.
    /// </summary>
    [Fact]
    public void MalformedAttributeAfterMessageIntegrity_IsIgnored_NotRejected()
    {
        var buffer = new byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), StunTransactionId.NewRandom());
        writer.WriteMessageIntegrity("key"u8);
        writer.WriteAttribute(StunAttributeType.Userhash, new byte[3]); // USERHASH must be 32 bytes
        writer.WriteFingerprint();

        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(writer.Written, StunReaderLimits.Default, out var message, out var error));
        Assert.Equal(StunParseError.None, error);
        Assert.False(message.HasAttribute(StunAttributeType.Userhash));
        Assert.True(message.VerifyMessageIntegrity("key"u8));
        Assert.True(message.VerifyFingerprint());

        // Before MESSAGE-INTEGRITY the same attribute is still judged.
        writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), StunTransactionId.NewRandom());
        writer.WriteAttribute(StunAttributeType.Userhash, new byte[3]);
        writer.WriteMessageIntegrity("key"u8);
        Assert.Equal(OperationStatus.InvalidData, StunMessageReader.TryParse(writer.Written, StunReaderLimits.Default, out _, out error));
        Assert.Equal(StunParseError.InvalidAttribute, error);
    }

    /// <summary>RFC 8489 §14.11: PASSWORD-ALGORITHMS is never empty; the writer refuses what the reader would reject.</summary>
    [Fact]
    public void WritingAnEmptyPasswordAlgorithmsList_Throws()
    {
        var buffer = new byte[64];
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), StunTransactionId.NewRandom());
            writer.WritePasswordAlgorithms([]);
        });
    }
}
