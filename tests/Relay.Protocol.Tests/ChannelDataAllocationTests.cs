using System.Buffers;
using System.Runtime.CompilerServices;
using Relay.Protocol.Turn;

namespace Relay.Protocol.Tests;

/// <summary>
/// The 0 B budget for the relay hot path: reading ChannelData (datagram and two-segment stream) and writing
/// it (padded and not) allocate nothing.
/// </summary>
/// <remarks>
/// Measured as in <see cref="AllocationBudgetTests"/>: <see cref="GC.GetAllocatedBytesForCurrentThread"/>
/// around 10,000 iterations after a warm-up, no xunit assertions inside the loop, results folded into a
/// checksum checked afterwards.
/// </remarks>
public sealed class ChannelDataAllocationTests
{
    private const int Iterations = 10_000;

    private static readonly byte[] Payload = ChannelDataVectors.CoturnClient.Data;
    private static readonly byte[] Datagram = ChannelDataVectors.CoturnClient.Unpadded;
    private static readonly byte[] Stream = ChannelDataVectors.CoturnClient.Stream.Concat(ChannelDataVectors.Hello4001.Stream).ToArray();

    /// <summary>UDP in, TCP out: read a datagram, relay its data as a padded stream message.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int DatagramToStream(byte[] datagram)
    {
        if (!ChannelDataReader.TryRead(datagram, ChannelDataLimits.Default, out var channel, out var data, out _))
        {
            return -1;
        }

        Span<byte> destination = stackalloc byte[64];
        return ChannelDataWriter.Write(destination, channel, data, pad: true);
    }

    /// <summary>TCP in, UDP out: frame two messages from a two-segment buffer, write each unpadded (header, then payload in place).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int StreamToDatagram(ReadOnlySequence<byte> stream)
    {
        var buffer = stream;
        var sum = 0;
        Span<byte> destination = stackalloc byte[64];
        while (ChannelDataReader.TryRead(ref buffer, ChannelDataLimits.Default, out var channel, out var data, out _) == OperationStatus.Done)
        {
            var length = (int)data.Length;
            sum += ChannelDataWriter.WriteHeader(destination, channel, length);
            data.CopyTo(destination[TurnChannel.HeaderLength..]);
            sum += length + ChannelDataWriter.GetLength(length, pad: false);
        }

        return sum;
    }

    [Fact]
    public void DatagramRead_AndPaddedWrite_AllocateNothing()
    {
        long checksum = 0;
        for (var i = 0; i < 1_000; i++)
        {
            checksum += DatagramToStream(Datagram);
        }

        checksum = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Iterations; i++)
        {
            checksum += DatagramToStream(Datagram);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.Equal((long)ChannelDataVectors.CoturnClient.Stream.Length * Iterations, checksum);
    }

    [Fact]
    public void StreamFraming_OverTwoSegments_AndUnpaddedWrite_AllocateNothing()
    {
        // Cut inside the first header (slow path) so that the second message starts in the second segment.
        var stream = TestSegment.Split(Stream, 2);
        long checksum = 0;
        for (var i = 0; i < 1_000; i++)
        {
            checksum += StreamToDatagram(stream);
        }

        checksum = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Iterations; i++)
        {
            checksum += StreamToDatagram(stream);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);

        // Per message: 4 (header) + length + (4 + length).
        Assert.Equal((long)((4 + 21 + 25) + (4 + 5 + 9)) * Iterations, checksum);
        Assert.Equal(21, Payload.Length);
    }
}
