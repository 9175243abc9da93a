using System.Buffers;
using BenchmarkDotNet.Attributes;
using Relay.Protocol.Mqtt;

namespace Relay.Benchmarks;

/// <summary>
/// MQTT codec (OASIS MQTT 3.1.1 / 5.0): framing and decoding CONNECT and PUBLISH, and writing PUBLISH and
/// CONNACK, as the device plane does per packet. The PUBLISH carries a 256-byte payload and v5 properties
/// (Content Type, one User Property), like a device command.
/// </summary>
[MemoryDiagnoser]
public class MqttCodecBenchmarks
{
    private static readonly KeyValuePair<string, string>[] UserProperties = [new("trace", "abc123")];
    private readonly byte[] _payload = new byte[256];
    private readonly ArrayBufferWriter<byte> _output = new(4096);
    private byte[] _connect = [];
    private byte[] _publish = [];
    private ReadOnlySequence<byte> _publishTwoSegments;

    [GlobalSetup]
    public void Setup()
    {
        new Random(311).NextBytes(_payload);
        var w = new ArrayBufferWriter<byte>();
        MqttPacketWriter.WriteConnect(w, new MqttConnectOptions
        {
            Version = MqttProtocolVersion.V500,
            ClientId = "device-000042",
            CleanStart = true,
            KeepAliveSeconds = 60,
            Username = "device-000042",
            Password = "a-long-device-token-0123456789"u8.ToArray(),
            HasPassword = true,
            SessionExpiryInterval = 3600,
            ReceiveMaximum = 32,
        });
        _connect = w.WrittenSpan.ToArray();

        w.Clear();
        MqttPacketWriter.WritePublish(w, MqttProtocolVersion.V500, "devices/000042/commands"u8, 1, false, false, 17, PublishProperties(), _payload);
        _publish = w.WrittenSpan.ToArray();

        // Cut inside the fixed header: the stackalloc slow path and a cross-segment body.
        var first = new Segment(_publish.AsMemory(0, 1));
        var second = first.Append(_publish.AsMemory(1));
        _publishTwoSegments = new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }

    private static MqttPublishProperties PublishProperties() => new() { ContentType = "application/json", UserProperties = UserProperties };

    [Benchmark]
    public int ReadConnect()
    {
        var buffer = new ReadOnlySequence<byte>(_connect);
        return MqttFrameReader.TryRead(ref buffer, 65_536, out var frame, out _) == OperationStatus.Done
            && MqttPacketReader.ReadConnect(frame, out var connect) == MqttDecodeError.None
            ? (int)connect.ClientId.Length + connect.KeepAliveSeconds
            : -1;
    }

    [Benchmark]
    public int ReadPublish()
    {
        var buffer = new ReadOnlySequence<byte>(_publish);
        return MqttFrameReader.TryRead(ref buffer, 65_536, out var frame, out _) == OperationStatus.Done
            && MqttPacketReader.ReadPublish(frame, MqttProtocolVersion.V500, out var publish) == MqttDecodeError.None
            ? (int)(publish.Topic.Length + publish.Payload.Length)
            : -1;
    }

    [Benchmark]
    public int ReadPublishTwoSegments()
    {
        var buffer = _publishTwoSegments;
        return MqttFrameReader.TryRead(ref buffer, 65_536, out var frame, out _) == OperationStatus.Done
            && MqttPacketReader.ReadPublish(frame, MqttProtocolVersion.V500, out var publish) == MqttDecodeError.None
            ? (int)(publish.Topic.Length + publish.Payload.Length)
            : -1;
    }

    [Benchmark]
    public int WritePublish()
    {
        _output.ResetWrittenCount();
        MqttPacketWriter.WritePublish(_output, MqttProtocolVersion.V500, "devices/000042/commands"u8, 1, false, false, 17, PublishProperties(), _payload);
        return _output.WrittenCount;
    }

    [Benchmark]
    public int WriteConnAck()
    {
        _output.ResetWrittenCount();
        MqttPacketWriter.WriteConnAck(_output, MqttProtocolVersion.V500, false, 0, new MqttConnAckProperties { ReceiveMaximum = 32, TopicAliasMaximum = 8, MaximumPacketSize = 65_536 });
        return _output.WrittenCount;
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
