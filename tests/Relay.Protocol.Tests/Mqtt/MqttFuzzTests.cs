using System.Buffers;
using Relay.Protocol.Mqtt;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>
/// Seeded random and mutated input: the codec never throws, never reports a frame larger than the input,
/// always makes progress on Done, and answers the same whatever the segmentation.
/// </summary>
public sealed class MqttFuzzTests
{
    private const int Cases = 20_000;

    [Fact]
    public void Mutated_vectors_never_throw_and_segmentation_never_changes_the_answer()
    {
        var random = new Random(0x5EED_3311);
        var vectors = MqttVectors.All().ToArray();
        var decodedSomething = 0;
        for (var i = 0; i < Cases; i++)
        {
            var (_, original, version) = vectors[random.Next(vectors.Length)];
            var mutated = Mutate(random, original);
            var contiguous = Run(new ReadOnlySequence<byte>(mutated), mutated.Length, version);
            var split = Run(TestSegment.RandomSplit(random, mutated, headerBias: 5), mutated.Length, version);
            Assert.Equal(contiguous, split);
            decodedSomething += contiguous.Contains("None", StringComparison.Ordinal) ? 1 : 0;
        }

        // The mutations are mild enough that many packets still decode: the deep paths were reached.
        Assert.True(decodedSomething > Cases / 10, $"only {decodedSomething} decoded");
    }

    [Fact]
    public void Random_bytes_never_throw_or_hang()
    {
        var random = new Random(0x0A5B);
        for (var i = 0; i < Cases; i++)
        {
            var bytes = new byte[random.Next(0, 64)];
            random.NextBytes(bytes);
            if (bytes.Length > 0 && random.Next(2) == 0)
            {
                // Steer the first byte to a valid type and flags half the time, so bodies get parsed.
                bytes[0] = (byte)((random.Next(1, 16) << 4) | (random.Next(4) == 0 ? 2 : 0));
            }

            foreach (var version in new[] { MqttProtocolVersion.V311, MqttProtocolVersion.V500 })
            {
                Assert.Equal(Run(new ReadOnlySequence<byte>(bytes), bytes.Length, version), Run(TestSegment.RandomSplit(random, bytes), bytes.Length, version));
            }
        }
    }

    /// <summary>Frames everything in the buffer and decodes each frame; returns a transcript of the answers.</summary>
    private static string Run(ReadOnlySequence<byte> buffer, int inputLength, MqttProtocolVersion version)
    {
        var transcript = new System.Text.StringBuilder();
        var consumed = 0L;
        for (var guard = 0; guard <= inputLength; guard++)
        {
            var before = buffer.Length;
            var status = MqttFrameReader.TryRead(ref buffer, 4096, out var frame, out var error);
            if (status != OperationStatus.Done)
            {
                Assert.Equal(before, buffer.Length);
                Assert.Equal(status == OperationStatus.InvalidData, error != MqttDecodeError.None);
                return transcript.Append(status).Append(':').Append(error).ToString();
            }

            Assert.True(frame.TotalLength >= 2);
            Assert.Equal(before - frame.TotalLength, buffer.Length);
            consumed += frame.TotalLength;
            Assert.True(consumed <= inputLength);
            Assert.Equal(frame.RemainingLength, frame.Body.Length);
            transcript.Append(frame.Type).Append('=').Append(DecodeAndWalk(frame, version)).Append(';');
        }

        Assert.Fail("no progress");
        return string.Empty;
    }

    /// <summary>Decodes, then walks everything the packet exposes, as the engine would.</summary>
    private static MqttDecodeError DecodeAndWalk(in MqttFrame frame, MqttProtocolVersion version)
    {
        switch (frame.Type)
        {
            case MqttPacketType.Connect:
                var e = MqttPacketReader.ReadConnect(frame, out var connect);
                if (e == MqttDecodeError.None)
                {
                    Walk(connect.Properties);
                    Walk(connect.WillProperties);
                }

                return e;
            case MqttPacketType.Publish:
                e = MqttPacketReader.ReadPublish(frame, version, out var publish);
                if (e == MqttDecodeError.None)
                {
                    Walk(publish.Properties);
                    Assert.True(publish.Payload.Length <= frame.RemainingLength);
                }

                return e;
            case MqttPacketType.Subscribe:
                e = MqttPacketReader.ReadSubscribe(frame, version, out var subscribe);
                if (e == MqttDecodeError.None)
                {
                    var n = 0;
                    foreach (var entry in subscribe.GetEntries())
                    {
                        Assert.True(entry.MaximumQoS <= 2);
                        n++;
                    }

                    Assert.Equal(subscribe.EntryCount, n);
                }

                return e;
            case MqttPacketType.Unsubscribe:
                e = MqttPacketReader.ReadUnsubscribe(frame, version, out var unsubscribe);
                if (e == MqttDecodeError.None)
                {
                    var n = 0;
                    foreach (var filter in unsubscribe.GetFilters())
                    {
                        Assert.False(filter.IsEmpty);
                        n++;
                    }

                    Assert.Equal(unsubscribe.FilterCount, n);
                }

                return e;
            default:
                return MqttKit.DecodeFrame(frame, version);
        }
    }

    private static void Walk(in MqttProperties properties)
    {
        var n = 0;
        foreach (var (name, value) in properties.GetUserProperties())
        {
            Assert.True(name.Length + value.Length <= properties.Raw.Length);
            n++;
        }

        Assert.Equal(properties.UserPropertyCount, n);
        var forwarded = new byte[properties.GetForwardableLength()];
        Assert.Equal(forwarded.Length, properties.CopyForwardableTo(forwarded));
    }

    private static byte[] Mutate(Random random, byte[] original)
    {
        var bytes = original.ToList();
        var edits = random.Next(1, 4);
        for (var i = 0; i < edits; i++)
        {
            var at = random.Next(bytes.Count + 1);
            switch (random.Next(6))
            {
                case 0 when at < bytes.Count:
                    bytes[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1 when at < bytes.Count:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 2:
                    bytes.Insert(at, (byte)random.Next(256));
                    break;
                case 3 when at < bytes.Count:
                    bytes.RemoveAt(at);
                    break;
                case 4:
                    // Append a copy of a valid packet: back-to-back framing after a damaged one.
                    bytes.AddRange(original);
                    break;
                default:
                    if (bytes.Count > 1)
                    {
                        bytes.RemoveRange(random.Next(1, bytes.Count), 1);
                    }

                    break;
            }
        }

        return bytes.ToArray();
    }
}
