using System.Buffers;
using Relay.Protocol.Turn;

namespace Relay.Protocol.Tests;

/// <summary>
/// Stream framing of ChannelData over TCP/TLS: every prefix and every segmentation of every vector.
/// RFC 8656 §12.5: over a stream each message is padded to a multiple of four and the padding is not in
/// Length, so the reader must consume 4 + Length rounded up to four, and nothing more.
/// </summary>
public sealed class ChannelDataFramingTests
{
    private static readonly ChannelDataLimits Limits = ChannelDataLimits.Default;

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void EveryStrictPrefix_IsNeedMoreData_AndDoesNotAdvance(string name)
    {
        var vector = ChannelDataVectors.ByName(name);
        for (var length = 0; length < vector.Stream.Length; length++)
        {
            // Exact-size copy: a read past the prefix would throw instead of seeing the rest of the vector.
            var prefix = vector.Stream.AsSpan(0, length).ToArray();
            var buffer = new ReadOnlySequence<byte>(prefix);
            var before = buffer;
            Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref buffer, Limits, out _, out var data, out var error));
            Assert.Equal(ChannelDataError.None, error);
            Assert.True(data.IsEmpty);
            Assert.Equal(before.Start, buffer.Start);
            Assert.Equal(before.End, buffer.End);

            if (length >= 2)
            {
                // The same prefix split in two non-empty segments.
                var split = TestSegment.Split(prefix, length / 2);
                var splitBefore = split;
                Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref split, Limits, out _, out _, out error));
                Assert.Equal(ChannelDataError.None, error);
                Assert.Equal(splitBefore.Start, split.Start);
                Assert.Equal(splitBefore.End, split.End);
            }
        }
    }

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void WholeMessage_InTwoSegments_AtEveryPosition(string name)
    {
        var vector = ChannelDataVectors.ByName(name);
        for (var cut = 0; cut <= vector.Stream.Length; cut++)
        {
            var buffer = TestSegment.Split(vector.Stream, cut);
            var original = buffer;
            Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out var error));
            Assert.Equal(ChannelDataError.None, error);
            Assert.Equal(vector.Channel, channel);
            Assert.Equal(vector.Data, data.ToArray());

            // The data is a view of the input right after the header, and the buffer moved past the padding.
            Assert.Equal(original.GetPosition(4), data.Start);
            Assert.True(buffer.IsEmpty);
            Assert.Equal(original.End, buffer.Start);
        }
    }

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void WholeMessage_InThreeSegments_AtEveryPairOfPositions(string name)
    {
        var vector = ChannelDataVectors.ByName(name);
        var stream = vector.Stream;

        // The 1204-byte vector would take 725,000 pairs; its first 40 bytes hold every header straddle.
        var last = Math.Min(stream.Length, 40);
        for (var first = 0; first <= last; first++)
        {
            for (var second = first; second <= last; second++)
            {
                var buffer = TestSegment.Split(stream, first, second);
                var status = ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out var error);
                if (status != OperationStatus.Done || channel != vector.Channel || !data.ToArray().AsSpan().SequenceEqual(vector.Data) || !buffer.IsEmpty)
                {
                    Assert.Fail($"{name}: cut at {first} and {second}: {status} {error}, channel {channel:X4}, {data.Length} bytes, {buffer.Length} left");
                }
            }
        }
    }

    [Fact]
    public void OneByteSegments_FrameEveryVector()
    {
        foreach (var vector in ChannelDataVectors.All())
        {
            var parts = vector.Stream.Select(b => (ReadOnlyMemory<byte>)new[] { b }).ToArray();
            var buffer = TestSegment.Sequence(parts);
            Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out _));
            Assert.Equal(vector.Channel, channel);
            Assert.True(vector.Data.AsSpan().SequenceEqual(data.ToArray()), vector.Name);
            Assert.True(buffer.IsEmpty, vector.Name);
        }
    }

    [Fact]
    public void EmptySegmentsInTheMiddle_AreTolerated()
    {
        var stream = ChannelDataVectors.Hello4001.Stream;
        var buffer = TestSegment.Sequence(ReadOnlyMemory<byte>.Empty, stream.AsMemory(0, 1), ReadOnlyMemory<byte>.Empty, stream.AsMemory(1, 2), ReadOnlyMemory<byte>.Empty, stream.AsMemory(3), ReadOnlyMemory<byte>.Empty);
        Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out _));
        Assert.Equal(0x4001, channel);
        Assert.Equal("hello"u8.ToArray(), data.ToArray());
        Assert.Equal(0, buffer.Length);
    }

    [Fact]
    public void EveryVectorBackToBack_IsReadInOrder_AtEverySplitOfTheStream()
    {
        // RFC 8656 §12.5: the padding exists so that the next message starts aligned; here every vector
        // follows the previous one in one stream, cut in two at every position.
        var vectors = ChannelDataVectors.All().ToArray();
        var stream = vectors.SelectMany(v => v.Stream).ToArray();
        for (var cut = 0; cut <= stream.Length; cut += cut < 64 || cut > stream.Length - 64 ? 1 : 17)
        {
            var buffer = TestSegment.Split(stream, cut);
            var original = buffer;
            var offset = 0;
            foreach (var vector in vectors)
            {
                Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out var error));
                Assert.Equal(ChannelDataError.None, error);
                Assert.Equal(vector.Channel, channel);
                Assert.Equal(original.GetPosition(offset + 4), data.Start);
                Assert.True(vector.Data.AsSpan().SequenceEqual(data.ToArray()), $"{vector.Name} at cut {cut}");
                offset += vector.Stream.Length;
                Assert.Equal(stream.Length - offset, buffer.Length);
            }

            Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref buffer, Limits, out _, out _, out _));
        }
    }

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void AMessageFollowedByAPartialOne_YieldsTheFirst_AndLeavesThePartialUntouched(string name)
    {
        var first = ChannelDataVectors.ByName(name).Stream;
        var second = ChannelDataVectors.Hello4001.Stream;
        for (var extra = 0; extra < second.Length; extra++)
        {
            var partial = first.Concat(second.Take(extra)).ToArray();
            var buffer = TestSegment.Split(partial, first.Length / 2);
            Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, Limits, out _, out var data, out _));
            Assert.Equal(ChannelDataVectors.ByName(name).Data, data.ToArray());
            Assert.Equal(extra, buffer.Length);

            var rest = buffer;
            Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref buffer, Limits, out _, out _, out _));
            Assert.Equal(rest.Start, buffer.Start);
            Assert.Equal(rest.End, buffer.End);
        }
    }

    [Fact]
    public void PaddingIsAwaited_TheMessageIsNotDoneUntilItsPaddingIsIn()
    {
        // RFC 8656 §12.5: over TCP the size is 4 + Length rounded up to 4: "hello" is 12 bytes, not 9.
        var stream = ChannelDataVectors.Hello4001.Stream;
        for (var length = 9; length < 12; length++)
        {
            var buffer = new ReadOnlySequence<byte>(stream.AsSpan(0, length).ToArray());
            Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref buffer, Limits, out _, out _, out _));
            Assert.Equal(length, buffer.Length);
        }
    }

    [Fact]
    public void DeclaredLengthOverTheLimit_IsTooLarge_WithOnlyTheHeaderBuffered()
    {
        // Nothing of the 65,535-byte body is here: the reader must decide on the header alone, not wait for it.
        var header = TestVectors.Hex("40 00 ff ff");
        var limits = new ChannelDataLimits { MaxDataLength = 1200 };
        var buffer = new ReadOnlySequence<byte>(header);
        Assert.Equal(OperationStatus.InvalidData, ChannelDataReader.TryRead(ref buffer, limits, out var channel, out var data, out var error));
        Assert.Equal(ChannelDataError.TooLarge, error);
        Assert.Equal(0x4000, channel);
        Assert.True(data.IsEmpty);
        Assert.Equal(4, buffer.Length);

        // The header straddling segments is judged the same way.
        for (var cut = 1; cut < 4; cut++)
        {
            buffer = TestSegment.Split(header, cut);
            Assert.Equal(OperationStatus.InvalidData, ChannelDataReader.TryRead(ref buffer, limits, out _, out _, out error));
            Assert.Equal(ChannelDataError.TooLarge, error);
        }

        // Within the limit the same header waits for its body.
        buffer = new ReadOnlySequence<byte>(header);
        Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref buffer, ChannelDataLimits.Default, out _, out _, out error));
        Assert.Equal(ChannelDataError.None, error);
    }

    [Fact]
    public void TheLimitIsOnLength_NotOnTheFramedSize()
    {
        // Length excludes header and padding (RFC 8656 §12.4), and so does MaxDataLength.
        var limits = new ChannelDataLimits { MaxDataLength = 5 };
        var buffer = new ReadOnlySequence<byte>(ChannelDataVectors.Hello4001.Stream);
        Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, limits, out _, out var data, out _));
        Assert.Equal(5, data.Length);

        limits = new ChannelDataLimits { MaxDataLength = 4 };
        buffer = new ReadOnlySequence<byte>(ChannelDataVectors.Hello4001.Stream);
        Assert.Equal(OperationStatus.InvalidData, ChannelDataReader.TryRead(ref buffer, limits, out _, out _, out var error));
        Assert.Equal(ChannelDataError.TooLarge, error);

        // default(ChannelDataLimits) accepts only empty messages.
        buffer = new ReadOnlySequence<byte>(ChannelDataVectors.Empty4000.Stream);
        Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, default, out _, out _, out _));
    }

    [Theory]
    [InlineData(0x00)] // STUN (RFC 8656 §12 Table 3: 0-3)
    [InlineData(0x01)]
    [InlineData(0x03)]
    [InlineData(0x14)] // ZRTP / DTLS
    [InlineData(0x16)] // DTLS handshake
    [InlineData(0x3F)]
    [InlineData(0x80)] // RTP/RTCP
    [InlineData(0xBF)]
    [InlineData(0xC0)]
    [InlineData(0xFF)]
    public void FirstTwoBitsNot01_IsNotChannelData_AsSoonAsTheFirstByteIsIn(byte first)
    {
        // RFC 8656 §12 / RFC 7983 §7: only first bytes with the bits 01 can be ChannelData.
        Assert.False(TurnChannel.LooksLikeChannelData(first));
        for (var length = 1; length <= 8; length++)
        {
            var bytes = new byte[length];
            bytes[0] = first;
            var buffer = new ReadOnlySequence<byte>(bytes);
            Assert.Equal(OperationStatus.InvalidData, ChannelDataReader.TryRead(ref buffer, Limits, out _, out _, out var error));
            Assert.Equal(ChannelDataError.NotChannelData, error);
            Assert.Equal(length, buffer.Length);
        }
    }

    [Theory]
    [InlineData(0x5000)]
    [InlineData(0x5001)]
    [InlineData(0x6000)]
    [InlineData(0x719E)] // the number coturn 4.6.1's uclient bound (RFC 5766 range)
    [InlineData(0x7FFE)] // near the top of the RFC 5766 range
    [InlineData(0x7FFF)]
    public void ReservedChannel_0x5000To0x7FFF_IsReservedChannel_AsSoonAsTheFirstByteIsIn(int number)
    {
        // RFC 8656 §12 Table 2 reserves 0x5000-0xFFFF; §12.6: such a message "is silently discarded".
        var channel = (ushort)number;
        Assert.True(TurnChannel.LooksLikeChannelData((byte)(channel >> 8)));
        Assert.False(TurnChannel.IsValidNumber(channel));
        var message = new byte[] { (byte)(channel >> 8), (byte)channel, 0, 1, 0xAA, 0, 0, 0 };
        for (var length = 1; length <= message.Length; length++)
        {
            var buffer = new ReadOnlySequence<byte>(message.AsSpan(0, length).ToArray());
            Assert.Equal(OperationStatus.InvalidData, ChannelDataReader.TryRead(ref buffer, Limits, out var reported, out var data, out var error));
            Assert.Equal(ChannelDataError.ReservedChannel, error);
            Assert.Equal(length >= 4 ? channel : 0, reported);
            Assert.True(data.IsEmpty);
            Assert.Equal(length, buffer.Length);
        }
    }

    [Fact]
    public void CoturnClientOnAnRfc5766Channel_IsReservedChannel()
    {
        var buffer = new ReadOnlySequence<byte>(ChannelDataVectors.CoturnClientReservedChannel);
        Assert.Equal(OperationStatus.InvalidData, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out _, out var error));
        Assert.Equal(ChannelDataError.ReservedChannel, error);
        Assert.Equal(0x719E, channel);
    }

    [Fact]
    public void EmptyBuffer_IsNeedMoreData()
    {
        var buffer = ReadOnlySequence<byte>.Empty;
        Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out var error));
        Assert.Equal(ChannelDataError.None, error);
        Assert.Equal(0, channel);
        Assert.True(data.IsEmpty);
    }

    [Fact]
    public void MaximumLength_65535_IsFramedWithOnePaddingByte()
    {
        // 4 + 65,535 = 65,539, rounded up to 65,540 (RFC 8656 §12.5).
        var message = new byte[65_540];
        message[0] = 0x40;
        message[1] = 0x07;
        message[2] = 0xFF;
        message[3] = 0xFF;
        message[^2] = 0x5A;
        var buffer = TestSegment.Split(message, 3, 40_000);
        Assert.Equal(OperationStatus.Done, ChannelDataReader.TryRead(ref buffer, Limits, out var channel, out var data, out _));
        Assert.Equal(0x4007, channel);
        Assert.Equal(65_535, data.Length);
        Assert.Equal(0x5A, data.Slice(65_534).FirstSpan[0]);
        Assert.True(buffer.IsEmpty);

        var truncated = new ReadOnlySequence<byte>(message.AsSpan(0, 65_539).ToArray());
        Assert.Equal(OperationStatus.NeedMoreData, ChannelDataReader.TryRead(ref truncated, Limits, out _, out _, out _));
    }
}
