using System.Buffers;
using System.Text;
using Relay.Server.Connectors;

namespace Relay.Unit.Tests.Connectors;

/// <summary>The spill record codec: a golden vector, every prefix, every single-byte change, and random round trips.</summary>
public sealed class ConnectorSpillRecordTests
{
    private const int Max = 1 << 20;

    private static readonly ConnectorMessage Sample = new("d1", "devices/d1/t", "hi"u8.ToArray(), 1, true, DateTimeOffset.FromUnixTimeMilliseconds(0x0102030405));

    [Fact]
    public void Write_GivesTheDocumentedLayout()
    {
        var bytes = Encode(Sample);
        byte[] body =
        [
            1, 1, 1, // version, qos, retain
            0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05, // receivedAt (Unix ms, big-endian)
            0, 2, (byte)'d', (byte)'1',
            0, 12, .. "devices/d1/t"u8.ToArray(),
            (byte)'h', (byte)'i',
        ];
        Assert.Equal(body.Length, ConnectorSpillRecord.Length(Sample) - ConnectorSpillRecord.HeaderLength);
        Assert.Equal([0, 0, 0, (byte)body.Length], bytes[..4]);
        Assert.Equal(System.IO.Hashing.Crc32.HashToUInt32(body), System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(4)));
        Assert.Equal(body, bytes[8..]);
    }

    [Fact]
    public void EveryStrictPrefix_NeedsMoreData_AndTheWholeRecordReadsBack()
    {
        var bytes = Encode(Sample);
        for (var length = 0; length < bytes.Length; length++)
        {
            Assert.Equal(OperationStatus.NeedMoreData, ConnectorSpillRecord.TryRead(bytes.AsSpan(0, length), Max, out _, out var consumed));
            Assert.Equal(0, consumed);
        }

        Assert.Equal(OperationStatus.Done, ConnectorSpillRecord.TryRead([.. bytes, 9, 9], Max, out var message, out var used));
        Assert.Equal(bytes.Length, used);
        AssertSame(Sample, message!);
    }

    [Fact]
    public void EverySingleByteChange_IsNeverReadAsAGoodRecord()
    {
        var bytes = Encode(Sample);
        for (var i = 0; i < bytes.Length; i++)
        {
            foreach (var flip in new byte[] { 0x01, 0x80, 0xFF })
            {
                var mutated = (byte[])bytes.Clone();
                mutated[i] ^= flip;
                var status = ConnectorSpillRecord.TryRead(mutated, Max, out _, out _);
                Assert.True(status != OperationStatus.Done, $"byte {i} ^ 0x{flip:x2} read as a good record");
            }
        }
    }

    [Fact]
    public void DeclaredLength_IsCheckedAgainstTheLimit_BeforeTheBodyIsNeeded()
    {
        Assert.Equal(OperationStatus.InvalidData, ConnectorSpillRecord.TryRead([0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0], Max, out _, out _));
        Assert.Equal(OperationStatus.InvalidData, ConnectorSpillRecord.TryRead([0, 0, 0, 3, 0, 0, 0, 0], Max, out _, out _));
        var bytes = Encode(Sample);
        Assert.Equal(OperationStatus.InvalidData, ConnectorSpillRecord.TryRead(bytes, bytes.Length - 9, out _, out _));
    }

    [Fact]
    public void InvalidUtf8_OrUnknownFlags_AreInvalid_EvenWithAGoodCrc()
    {
        var bytes = Encode(Sample with { ClientId = "ab" });
        bytes[8 + 11 + 2] = 0xC3; // 'a' -> a lone UTF-8 lead byte
        Assert.Equal(OperationStatus.InvalidData, ConnectorSpillRecord.TryRead(Recrc(bytes), Max, out _, out _));

        bytes = Encode(Sample);
        bytes[8 + 2] = 2; // flags: only bit 0 is defined
        Assert.Equal(OperationStatus.InvalidData, ConnectorSpillRecord.TryRead(Recrc(bytes), Max, out _, out _));

        bytes = Encode(Sample);
        bytes[8 + 1] = 3; // qos 3
        Assert.Equal(OperationStatus.InvalidData, ConnectorSpillRecord.TryRead(Recrc(bytes), Max, out _, out _));
    }

    [Fact]
    public void RandomMessages_RoundTrip_OneAfterAnother()
    {
        var random = new Random(1234);
        var messages = Enumerable.Range(0, 200).Select(_ => new ConnectorMessage(
            RandomText(random, random.Next(0, 40)),
            RandomText(random, random.Next(1, 80)),
            RandomBytes(random, random.Next(0, 3000)),
            (byte)random.Next(0, 3),
            random.Next(2) == 1,
            DateTimeOffset.FromUnixTimeMilliseconds(random.NextInt64(0, 4_000_000_000_000)))).ToList();
        var buffer = new ArrayBufferWriter<byte>();
        foreach (var message in messages)
        {
            ConnectorSpillRecord.Write(buffer, message);
        }

        var rest = buffer.WrittenSpan;
        foreach (var expected in messages)
        {
            Assert.Equal(OperationStatus.Done, ConnectorSpillRecord.TryRead(rest, Max, out var read, out var consumed));
            AssertSame(expected, read!);
            rest = rest[consumed..];
        }

        Assert.True(rest.IsEmpty);
    }

    internal static void AssertSame(ConnectorMessage expected, ConnectorMessage actual)
    {
        Assert.Equal(expected.ClientId, actual.ClientId);
        Assert.Equal(expected.Topic, actual.Topic);
        Assert.Equal(expected.Payload.ToArray(), actual.Payload.ToArray());
        Assert.Equal(expected.QoS, actual.QoS);
        Assert.Equal(expected.Retain, actual.Retain);
        Assert.Equal(expected.ReceivedAt, actual.ReceivedAt);
    }

    private static byte[] Encode(ConnectorMessage message)
    {
        var buffer = new ArrayBufferWriter<byte>();
        ConnectorSpillRecord.Write(buffer, message);
        return buffer.WrittenSpan.ToArray();
    }

    private static byte[] Recrc(byte[] record)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(record.AsSpan(4), System.IO.Hashing.Crc32.HashToUInt32(record.AsSpan(8)));
        return record;
    }

    private static string RandomText(Random random, int length)
    {
        var builder = new StringBuilder(length);
        for (var i = 0; i < length; i++)
        {
            // ASCII, Latin, CJK and a surrogate pair now and then: multi-byte UTF-8.
            builder.Append(random.Next(10) switch
            {
                0 => "é",
                1 => "温",
                2 => "😀",
                _ => ((char)random.Next('a', 'z' + 1)).ToString(),
            });
        }

        return builder.ToString();
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }
}
