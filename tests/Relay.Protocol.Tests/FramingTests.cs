using System.Buffers;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>
/// Every prefix and every segmentation of every vector through both entry points
/// (RFC 8489 §6.2.2: over TCP the header's length field is what delimits messages).
/// </summary>
public sealed class FramingTests
{
    private static readonly StunReaderLimits Limits = StunReaderLimits.Default;

    [Theory]
    [MemberData(nameof(TestVectors.Names), MemberType = typeof(TestVectors))]
    public void EveryStrictPrefix_IsNeedMoreData_AndDoesNotAdvance(string name)
    {
        var vector = TestVectors.ByName(name);
        for (var length = 0; length < vector.Length; length++)
        {
            // Exact-size copy: a read past the prefix would throw instead of seeing the rest of the vector.
            var prefix = vector.AsSpan(0, length).ToArray();

            Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryParse(prefix, Limits, out _, out var parseError));
            Assert.Equal(StunParseError.None, parseError);

            var buffer = new ReadOnlySequence<byte>(prefix);
            Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out var readError));
            Assert.Equal(StunParseError.None, readError);
            Assert.True(message.IsEmpty);
            Assert.Equal(length, buffer.Length);
            Assert.True(buffer.Start.Equals(new ReadOnlySequence<byte>(prefix).Start) || length == 0);

            if (length >= 2)
            {
                // The same prefix split in two non-empty segments.
                var split = TestSegment.Split(prefix, length / 2);
                var before = split;
                Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryReadMessage(ref split, Limits, out _, out readError));
                Assert.Equal(StunParseError.None, readError);
                Assert.Equal(before.Start, split.Start);
                Assert.Equal(before.End, split.End);
            }
        }
    }

    [Theory]
    [MemberData(nameof(TestVectors.Names), MemberType = typeof(TestVectors))]
    public void WholeMessage_InTwoSegments_AtEveryPosition(string name)
    {
        var vector = TestVectors.ByName(name);
        for (var cut = 0; cut <= vector.Length; cut++)
        {
            var buffer = TestSegment.Split(vector, cut);
            Assert.Equal(OperationStatus.Done, StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out var error));
            Assert.Equal(StunParseError.None, error);
            Assert.Equal(vector, message.ToArray());
            Assert.True(buffer.IsEmpty);

            Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(message.ToArray(), Limits, out var parsed, out error));
            Assert.Equal(vector.Length, parsed.Raw.Length);
        }
    }

    [Theory]
    [MemberData(nameof(TestVectors.Names), MemberType = typeof(TestVectors))]
    public void WholeMessage_InThreeSegments_AtEveryPairOfPositions(string name)
    {
        var vector = TestVectors.ByName(name);
        for (var first = 0; first <= vector.Length; first++)
        {
            for (var second = first; second <= vector.Length; second++)
            {
                var buffer = TestSegment.Split(vector, first, second);
                var status = StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out var error);
                if (status != OperationStatus.Done || !message.ToArray().AsSpan().SequenceEqual(vector) || !buffer.IsEmpty)
                {
                    Assert.Fail($"{name}: cut at {first} and {second}: {status} {error}, {message.Length} bytes, {buffer.Length} left");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(TestVectors.Names), MemberType = typeof(TestVectors))]
    public void TwoMessagesBackToBack_SplitAtEveryPosition_YieldBothAndTheRightLeftover(string name)
    {
        var first = TestVectors.ByName(name);
        var second = TestVectors.Rfc5769Ipv6Response;
        var stream = first.Concat(second).ToArray();
        for (var cut = 0; cut <= stream.Length; cut++)
        {
            var buffer = TestSegment.Split(stream, cut);
            Assert.Equal(OperationStatus.Done, StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out _));
            Assert.Equal(first, message.ToArray());
            Assert.Equal(second, buffer.ToArray());

            Assert.Equal(OperationStatus.Done, StunMessageReader.TryReadMessage(ref buffer, Limits, out message, out _));
            Assert.Equal(second, message.ToArray());
            Assert.True(buffer.IsEmpty);

            Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryReadMessage(ref buffer, Limits, out _, out _));
        }

        // A partial second message is left untouched after the first is taken.
        for (var extra = 0; extra < second.Length; extra++)
        {
            var partial = stream.AsSpan(0, first.Length + extra).ToArray();
            var buffer = TestSegment.Split(partial, first.Length / 2);
            Assert.Equal(OperationStatus.Done, StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out _));
            Assert.Equal(first, message.ToArray());
            Assert.Equal(extra, buffer.Length);
            var rest = buffer;
            Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryReadMessage(ref buffer, Limits, out _, out _));
            Assert.Equal(rest.Start, buffer.Start);
        }
    }

    [Fact]
    public void OneByteSegments_FrameEveryVector()
    {
        foreach (var (name, vector) in TestVectors.All())
        {
            var parts = vector.Select(b => (ReadOnlyMemory<byte>)new[] { b }).ToArray();
            var buffer = TestSegment.Sequence(parts);
            Assert.Equal(OperationStatus.Done, StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out _));
            Assert.True(vector.AsSpan().SequenceEqual(message.ToArray()), name);
        }
    }

    [Fact]
    public void EmptySegmentsInTheMiddle_AreTolerated()
    {
        var vector = TestVectors.Rfc5769Request;
        var buffer = TestSegment.Sequence(vector.AsMemory(0, 2), ReadOnlyMemory<byte>.Empty, vector.AsMemory(2, 1), ReadOnlyMemory<byte>.Empty, vector.AsMemory(3));
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryReadMessage(ref buffer, Limits, out var message, out _));
        Assert.Equal(vector, message.ToArray());
    }
}
