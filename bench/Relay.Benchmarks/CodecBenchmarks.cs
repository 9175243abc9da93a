using System.Buffers;
using System.Net;
using BenchmarkDotNet.Attributes;
using Relay.Protocol.Stun;

namespace Relay.Benchmarks;

/// <summary>Messages shared by the benchmark classes, built once with the codec's own writer.</summary>
internal static class Messages
{
    public static readonly StunTransactionId TransactionId = StunTransactionId.Read([0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]);

    public static readonly StunAddress Client = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 32853));

    /// <summary>RFC 5769's short-term password as a key.</summary>
    public static readonly byte[] Key = "VOkJxbRl1RmTxUk/WvJxBt"u8.ToArray();

    /// <summary>A Binding request as browsers and libraries send it: SOFTWARE + FINGERPRINT (48 bytes).</summary>
    public static readonly byte[] BindingRequest = Build(static (ref StunMessageWriter w) =>
    {
        w.WriteAttribute(StunAttributeType.Software, "relay-bench client"u8);
        w.WriteFingerprint();
    });

    /// <summary>An ICE-style request: USERNAME + PRIORITY + MESSAGE-INTEGRITY + FINGERPRINT.</summary>
    public static readonly byte[] AuthenticatedRequest = Build(static (ref StunMessageWriter w) =>
    {
        w.WriteAttribute(StunAttributeType.Username, "evtj:h6vY"u8);
        w.WriteUInt32(StunAttributeType.Priority, 0x6e0001ff);
        w.WriteMessageIntegrity(Key);
        w.WriteFingerprint();
    });

    public delegate void Body(ref StunMessageWriter writer);

    private static byte[] Build(Body body)
    {
        var buffer = new byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), TransactionId);
        body(ref writer);
        return writer.Written.ToArray();
    }
}

/// <summary>Datagram parsing: validation walk, attribute look-up, FINGERPRINT and MESSAGE-INTEGRITY checks.</summary>
[MemoryDiagnoser]
public class ParseBenchmarks
{
    private readonly byte[] _request = Messages.BindingRequest;
    private readonly byte[] _authenticated = Messages.AuthenticatedRequest;
    private readonly byte[] _key = Messages.Key;

    [Benchmark]
    public int ParseBindingRequest()
    {
        StunMessageReader.TryParse(_request, StunReaderLimits.Default, out var message, out _);
        return message.TryGetAttribute(StunAttributeType.Software, out var software) ? software.Length + message.AttributeCount : -1;
    }

    [Benchmark]
    public bool ParseAndVerifyFingerprint()
    {
        return StunMessageReader.TryParse(_request, StunReaderLimits.Default, out var message, out _) == OperationStatus.Done
            && message.VerifyFingerprint();
    }

    [Benchmark]
    public bool ParseAndVerifyMessageIntegrity()
    {
        return StunMessageReader.TryParse(_authenticated, StunReaderLimits.Default, out var message, out _) == OperationStatus.Done
            && message.VerifyMessageIntegrity(_key)
            && message.VerifyFingerprint();
    }
}

/// <summary>Response writing into a caller-owned buffer.</summary>
[MemoryDiagnoser]
public class WriteBenchmarks
{
    private readonly byte[] _buffer = new byte[256];
    private readonly byte[] _key = Messages.Key;
    private readonly StunAddress _client = Messages.Client;

    [Benchmark]
    public int WriteBindingResponse()
    {
        var writer = new StunMessageWriter(_buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), Messages.TransactionId);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, _client);
        writer.WriteAttribute(StunAttributeType.Software, "relay"u8);
        writer.WriteFingerprint();
        return writer.Length;
    }

    [Benchmark]
    public int WriteWithMessageIntegrity()
    {
        var writer = new StunMessageWriter(_buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), Messages.TransactionId);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, _client);
        writer.WriteAttribute(StunAttributeType.Software, "relay"u8);
        writer.WriteMessageIntegrity(_key);
        writer.WriteFingerprint();
        return writer.Length;
    }
}

/// <summary>TCP framing (RFC 8489 §6.2.2) over a message split across two pipe segments.</summary>
[MemoryDiagnoser]
public class FramingBenchmarks
{
    private ReadOnlySequence<byte> _twoSegments;

    [GlobalSetup]
    public void Setup()
    {
        var message = Messages.AuthenticatedRequest;
        var first = new Segment(message.AsMemory(0, 7));
        var second = first.Append(message.AsMemory(7));
        _twoSegments = new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }

    [Benchmark]
    public long TryReadMessageTwoSegments()
    {
        var buffer = _twoSegments;
        StunMessageReader.TryReadMessage(ref buffer, StunReaderLimits.Default, out var frame, out _);
        return frame.Length;
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
