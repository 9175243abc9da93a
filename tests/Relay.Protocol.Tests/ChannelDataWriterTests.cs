using System.Buffers;
using System.Buffers.Binary;
using Relay.Protocol.Turn;

namespace Relay.Protocol.Tests;

/// <summary>
/// The writer against the reader and the vectors. RFC 8656 §12.5: over TCP "the ChannelData message MUST be
/// padded to a multiple of four bytes"; the padding is not in Length; over UDP it is optional.
/// </summary>
public sealed class ChannelDataWriterTests
{
    [Fact]
    public void RoundTrip_Lengths0To70_WithAndWithoutPadding_PaddingIsZero()
    {
        var random = new Random(8656);
        for (var length = 0; length <= 70; length++)
        {
            foreach (var pad in new[] { false, true })
            {
                var payload = new byte[length];
                random.NextBytes(payload);
                var channel = (ushort)(TurnChannel.MinNumber + random.Next(0x1000));

                // Poison the destination so unwritten or stale padding would show.
                var destination = Enumerable.Repeat((byte)0xCC, 80).ToArray();
                var written = ChannelDataWriter.Write(destination, channel, payload, pad);
                var expectedLength = pad ? (4 + length + 3) & ~3 : 4 + length;
                Assert.Equal(expectedLength, written);
                Assert.Equal(expectedLength, ChannelDataWriter.GetLength(length, pad));
                Assert.Equal(channel, BinaryPrimitives.ReadUInt16BigEndian(destination));
                Assert.Equal(length, BinaryPrimitives.ReadUInt16BigEndian(destination.AsSpan(2)));
                Assert.All(destination[(4 + length)..written], b => Assert.Equal(0, b));
                Assert.All(destination[written..], b => Assert.Equal(0xCC, b));

                // Exact-size copy of what was written, through both readers.
                var message = destination.AsSpan(0, written).ToArray();
                Assert.True(ChannelDataReader.TryRead(message, ChannelDataLimits.Default, out var udpChannel, out var udpData, out _));
                Assert.Equal(channel, udpChannel);
                Assert.True(payload.AsSpan().SequenceEqual(udpData));

                var buffer = new ReadOnlySequence<byte>(message);
                var status = ChannelDataReader.TryRead(ref buffer, ChannelDataLimits.Default, out var tcpChannel, out var tcpData, out _);
                if (pad || written % 4 == 0)
                {
                    Assert.Equal(OperationStatus.Done, status);
                    Assert.Equal(channel, tcpChannel);
                    Assert.Equal(payload, tcpData.ToArray());
                    Assert.True(buffer.IsEmpty);
                }
                else
                {
                    // Unpadded over a stream is a protocol error by the sender: the reader waits for the padding.
                    Assert.Equal(OperationStatus.NeedMoreData, status);
                }
            }
        }
    }

    [Fact]
    public void Writer_ReproducesTheHandBuiltAndZeroPaddedVectors()
    {
        foreach (var vector in new[] { ChannelDataVectors.Empty4000, ChannelDataVectors.Hello4001, ChannelDataVectors.Aligned4002, ChannelDataVectors.Large4FFF, ChannelDataVectors.CoturnClient })
        {
            var destination = new byte[vector.Stream.Length];
            Assert.Equal(vector.Stream.Length, ChannelDataWriter.Write(destination, vector.Channel, vector.Data, pad: true));
            Assert.Equal(vector.Stream, destination);

            var datagram = new byte[vector.Data.Length + 4];
            Assert.Equal(datagram.Length, ChannelDataWriter.Write(datagram, vector.Channel, vector.Data, pad: false));
            Assert.Equal(vector.Unpadded, datagram);
        }
    }

    [Fact]
    public void WriteHeader_ThenPayloadInPlace_EqualsWrite()
    {
        var payload = "in place"u8.ToArray();
        var destination = new byte[16];
        payload.CopyTo(destination, 4);
        Assert.Equal(4, ChannelDataWriter.WriteHeader(destination, 0x4123, payload.Length));

        var expected = new byte[16];
        ChannelDataWriter.Write(expected, 0x4123, payload, pad: true);
        Assert.Equal(expected, destination);

        // Write with the data already in place at destination[4..] (overlapping copy) gives the same.
        var overlapping = new byte[16];
        payload.CopyTo(overlapping, 4);
        Assert.Equal(12, ChannelDataWriter.Write(overlapping, 0x4123, overlapping.AsSpan(4, payload.Length), pad: true));
        Assert.Equal(expected, overlapping);
    }

    [Fact]
    public void GetLength_RoundsUpOnlyWhenPadding()
    {
        Assert.Equal(4, ChannelDataWriter.GetLength(0, pad: true));
        Assert.Equal(8, ChannelDataWriter.GetLength(1, pad: true));
        Assert.Equal(8, ChannelDataWriter.GetLength(4, pad: true));
        Assert.Equal(5, ChannelDataWriter.GetLength(1, pad: false));
        Assert.Equal(65_540, ChannelDataWriter.GetLength(65_535, pad: true));
        Assert.Equal(65_539, ChannelDataWriter.GetLength(65_535, pad: false));
    }

    [Fact]
    public void ProgrammingErrors_Throw()
    {
        var destination = new byte[16];

        // The writer frames whatever the server accepted: RFC 8656 §12's 0x4000-0x4FFF, and RFC 5766's
        // 0x5000-0x7FFF when the relay is configured to accept the clients that still bind those.
        foreach (var channel in new ushort[] { 0x0000, 0x3FFF, 0x8000, 0xFFFF })
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.Write(destination, channel, [1], pad: true));
            Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.WriteHeader(destination, channel, 1));
        }

        foreach (var channel in new ushort[] { 0x5000, 0x7FFF })
        {
            Assert.Equal(8, ChannelDataWriter.Write(destination, channel, [1], pad: true));
            Assert.Equal(channel, System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(destination));
        }

        // Destination too small, padding included.
        Assert.Throws<ArgumentException>(() => ChannelDataWriter.Write(new byte[8], 0x4000, new byte[5], pad: true));
        Assert.Equal(9, ChannelDataWriter.Write(new byte[9], 0x4000, new byte[5], pad: false));
        Assert.Throws<ArgumentException>(() => ChannelDataWriter.WriteHeader(new byte[3], 0x4000, 0));

        // RFC 8656 §12.4: Length is 16 bits.
        Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.Write(new byte[70_000], 0x4000, new byte[65_536], pad: false));
        Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.WriteHeader(destination, 0x4000, 65_536));
        Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.WriteHeader(destination, 0x4000, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.GetLength(-1, pad: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => ChannelDataWriter.GetLength(65_536, pad: false));
    }

    [Fact]
    public void ChannelNumberRange_IsRfc8656Table2()
    {
        Assert.False(TurnChannel.IsValidNumber(0x0000));
        Assert.False(TurnChannel.IsValidNumber(0x3FFF));
        Assert.True(TurnChannel.IsValidNumber(TurnChannel.MinNumber));
        Assert.True(TurnChannel.IsValidNumber(0x4ABC));
        Assert.True(TurnChannel.IsValidNumber(TurnChannel.MaxNumber));
        Assert.False(TurnChannel.IsValidNumber(0x5000));
        Assert.False(TurnChannel.IsValidNumber(0x7FFE));
        Assert.False(TurnChannel.IsValidNumber(0xFFFF));
        Assert.Equal(4096, Enumerable.Range(0, 0x10000).Count(n => TurnChannel.IsValidNumber((ushort)n)));
    }
}
