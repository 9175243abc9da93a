using System.Buffers;
using System.Runtime.CompilerServices;
using Relay.Protocol.Mqtt;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>
/// The 0 B budget of the MQTT hot paths: framing and decoding CONNECT, PUBLISH, SUBSCRIBE (contiguous and
/// one byte per segment, enumerators included) and writing PUBLISH, acks and CONNACK allocate nothing.
/// Measured as in <see cref="AllocationBudgetTests"/>: warm up, then <see cref="GC.GetAllocatedBytesForCurrentThread"/>
/// around the loop, with no assertions inside it.
/// </summary>
public sealed class MqttAllocationTests
{
    private const int Iterations = 10_000;

    private static readonly byte[] Stream = MqttVectors.CapturedConnectSubV5.Concat(MqttVectors.CapturedPublishV5).Concat(MqttVectors.CapturedSubscribeV5).ToArray();
    private static readonly ReadOnlySequence<byte> Contiguous = new(Stream);
    private static readonly ReadOnlySequence<byte> Fragmented = MqttKit.BytePerSegment(Stream);
    private static readonly byte[] Payload = new byte[256];
    private static readonly KeyValuePair<string, string>[] UserProperties = [new("trace", "abc")];
    private static readonly uint[] SubscriptionIds = [7];
    private static readonly ArrayBufferWriter<byte> Output = new(4096);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long ReadAll(ReadOnlySequence<byte> buffer)
    {
        long sum = 0;
        while (MqttFrameReader.TryRead(ref buffer, 65_536, out var frame, out _) == OperationStatus.Done)
        {
            switch (frame.Type)
            {
                case MqttPacketType.Connect when MqttPacketReader.ReadConnect(frame, out var c) == MqttDecodeError.None:
                    sum += c.ClientId.Length + c.KeepAliveSeconds;
                    foreach (var (name, value) in c.Properties.GetUserProperties())
                    {
                        sum += name.Length + value.Length;
                    }

                    break;
                case MqttPacketType.Publish when MqttPacketReader.ReadPublish(frame, MqttProtocolVersion.V500, out var p) == MqttDecodeError.None:
                    sum += p.Topic.Length + p.Payload.Length + p.Properties.GetForwardableLength();
                    foreach (var (name, _) in p.Properties.GetUserProperties())
                    {
                        sum += name.Length;
                    }

                    break;
                case MqttPacketType.Subscribe when MqttPacketReader.ReadSubscribe(frame, MqttProtocolVersion.V500, out var s) == MqttDecodeError.None:
                    foreach (var entry in s.GetEntries())
                    {
                        sum += entry.TopicFilter.Length + entry.MaximumQoS;
                    }

                    break;
                default:
                    sum -= 1_000_000;
                    break;
            }
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long WriteAll()
    {
        Output.ResetWrittenCount();
        var properties = new MqttPublishProperties { ContentType = "text/plain", UserProperties = UserProperties, SubscriptionIdentifiers = SubscriptionIds, MessageExpiryInterval = 60 };
        MqttPacketWriter.WritePublish(Output, MqttProtocolVersion.V500, "devices/42/cmd"u8, 1, false, false, 1, properties, Payload);
        MqttPacketWriter.WritePublish(Output, MqttProtocolVersion.V311, "devices/42/cmd"u8, 0, false, false, 0, default, Fragmented);
        MqttPacketWriter.WriteAck(Output, MqttPacketType.PubAck, MqttProtocolVersion.V500, 1, MqttReasonCode.Success);
        MqttPacketWriter.WriteAck(Output, MqttPacketType.PubRec, MqttProtocolVersion.V500, 1, MqttReasonCode.QuotaExceeded, "full");
        MqttPacketWriter.WriteSubAck(Output, MqttProtocolVersion.V500, 1, [0x01]);
        MqttPacketWriter.WriteConnAck(Output, MqttProtocolVersion.V500, false, 0, new MqttConnAckProperties { AssignedClientIdentifier = "auto-1", ReceiveMaximum = 32, TopicAliasMaximum = 8 });
        MqttPacketWriter.WritePingResp(Output);
        return Output.WrittenCount + MqttPacketWriter.MeasurePublish(MqttProtocolVersion.V500, "devices/42/cmd"u8, 1, properties, Payload.Length);
    }

    [Fact]
    public void Reading_and_writing_allocate_nothing()
    {
        var expected = ReadAll(Contiguous) + ReadAll(Fragmented) + WriteAll();
        Assert.True(ReadAll(Contiguous) > 0, "every packet decoded");

        var checksum = 0L;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Iterations; i++)
        {
            checksum += ReadAll(Contiguous) + ReadAll(Fragmented) + WriteAll();
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(expected * Iterations, checksum);
        Assert.Equal(0, allocated);
    }
}
