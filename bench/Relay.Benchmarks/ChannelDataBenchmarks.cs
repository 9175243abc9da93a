using System.Buffers;
using BenchmarkDotNet.Attributes;
using Relay.Protocol.Turn;

namespace Relay.Benchmarks;

/// <summary>
/// TURN ChannelData (RFC 8656 §12.4-§12.6): the relay's per-packet work, read on one side and written on
/// the other. A 1200-byte payload, a typical media packet.
/// </summary>
[MemoryDiagnoser]
public class ChannelDataBenchmarks
{
    private readonly byte[] _payload = new byte[1200];
    private readonly byte[] _destination = new byte[1280];
    private byte[] _datagram = [];
    private ReadOnlySequence<byte> _twoSegments;

    [GlobalSetup]
    public void Setup()
    {
        new Random(8656).NextBytes(_payload);

        // Unpadded over UDP; padded over TCP (RFC 8656 §12.5): 1200 is already a multiple of 4, so add a
        // 1199-byte message after it to make the stream read consume real padding.
        _datagram = new byte[ChannelDataWriter.GetLength(_payload.Length, pad: false)];
        ChannelDataWriter.Write(_datagram, 0x4001, _payload, pad: false);

        var stream = new byte[ChannelDataWriter.GetLength(1200, pad: true) + ChannelDataWriter.GetLength(1199, pad: true)];
        var written = ChannelDataWriter.Write(stream, 0x4001, _payload, pad: true);
        ChannelDataWriter.Write(stream.AsSpan(written), 0x4002, _payload.AsSpan(0, 1199), pad: true);

        // Cut inside the first header: the slow path for the header, a cross-segment slice for the data.
        var first = new Segment(stream.AsMemory(0, 2));
        var second = first.Append(stream.AsMemory(2));
        _twoSegments = new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }

    [Benchmark]
    public int ReadDatagram()
    {
        return ChannelDataReader.TryRead(_datagram, ChannelDataLimits.Default, out var channel, out var data, out _)
            ? channel + data.Length
            : -1;
    }

    [Benchmark]
    public long ReadStreamTwoMessagesTwoSegments()
    {
        var buffer = _twoSegments;
        long sum = 0;
        while (ChannelDataReader.TryRead(ref buffer, ChannelDataLimits.Default, out var channel, out var data, out _) == OperationStatus.Done)
        {
            sum += channel + data.Length;
        }

        return sum;
    }

    [Benchmark]
    public int WritePadded()
    {
        return ChannelDataWriter.Write(_destination, 0x4001, _payload.AsSpan(0, 1199), pad: true);
    }

    /// <summary>The UDP-to-TCP relay step: parse a datagram and write its data as a padded stream message.</summary>
    [Benchmark]
    public int ReadDatagramAndWritePadded()
    {
        return ChannelDataReader.TryRead(_datagram, ChannelDataLimits.Default, out var channel, out var data, out _)
            ? ChannelDataWriter.Write(_destination, channel, data, pad: true)
            : -1;
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
