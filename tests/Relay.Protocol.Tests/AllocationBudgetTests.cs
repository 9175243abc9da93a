using System.Buffers;
using System.Net;
using System.Runtime.CompilerServices;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>
/// The CI-enforced 0 B budget: parsing a Binding request and writing its response allocate nothing.
/// </summary>
/// <remarks>
/// Measured with <see cref="GC.GetAllocatedBytesForCurrentThread"/> around 10,000 iterations after a
/// warm-up, so JIT tiering, static constructors and first-use pool fills are excluded. The loop body
/// uses no xunit assertions (they may allocate); results are folded into a checksum checked afterwards.
/// </remarks>
public sealed class AllocationBudgetTests
{
    private const int Iterations = 10_000;

    private static readonly byte[] BindingRequest = MakeBindingRequest();
    private static readonly byte[] ShortTermKey = StunCredentials.ComputeShortTermKey(TestVectors.ShortTermPassword);
    private static readonly StunAddress Client = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 32853));
    // A static array, not a collection expression at the call site: in a Debug build of this test
    // assembly the latter allocated per call (measured: 72 B), which would be the test's allocation, not the codec's.
    private static readonly ushort[] Understood = [(ushort)StunAttributeType.Username, (ushort)StunAttributeType.Priority, (ushort)StunAttributeType.MessageIntegrity];
    private static readonly StunAddress ClientV6 = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse("2001:db8::1"), 32853));

    private static byte[] MakeBindingRequest()
    {
        var buffer = new byte[64];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), TestVectors.TxId(TestVectors.SampleTransactionId));
        writer.WriteAttribute(StunAttributeType.Software, "relay-test client"u8);
        writer.WriteFingerprint();
        return writer.Written.ToArray();
    }

    /// <summary>Parse a Binding request (SOFTWARE + FINGERPRINT), answer with XOR-MAPPED-ADDRESS + SOFTWARE + FINGERPRINT.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int BindingRoundTrip(byte[] request, in StunAddress client)
    {
        if (StunMessageReader.TryParse(request, StunReaderLimits.Default, out var message, out _) != OperationStatus.Done
            || !message.VerifyFingerprint()
            || !message.TryGetAttribute(StunAttributeType.Software, out var software))
        {
            return -1;
        }

        Span<byte> response = stackalloc byte[128];
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), message.Header.TransactionId);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, client);
        writer.WriteAttribute(StunAttributeType.Software, "relay"u8);
        writer.WriteFingerprint();
        return writer.Length + software.Length;
    }

    /// <summary>The RFC 5769 §2.1 request: verify MESSAGE-INTEGRITY and FINGERPRINT, read every attribute, answer with MI + FINGERPRINT.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int AuthenticatedRoundTrip(byte[] request, byte[] key, in StunAddress client)
    {
        if (StunMessageReader.TryParse(request, StunReaderLimits.Default, out var message, out _) != OperationStatus.Done
            || !message.VerifyMessageIntegrity(key)
            || !message.VerifyFingerprint())
        {
            return -1;
        }

        var sum = 0;
        foreach (var attribute in message)
        {
            sum += attribute.Type + attribute.Value.Length;
        }

        Span<ushort> unknown = stackalloc ushort[4];
        sum += message.CollectUnknownComprehensionRequired(Understood, unknown);

        Span<byte> response = stackalloc byte[256];
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), message.Header.TransactionId);
        writer.WriteXorAddress(StunAttributeType.XorMappedAddress, client);
        writer.WriteMessageIntegrity(key);
        writer.WriteMessageIntegritySha256(key);
        writer.WriteFingerprint();
        return sum + writer.Length;
    }

    /// <summary>TCP framing over a two-segment sequence, then parse of the (contiguous) frame.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int FramedParse(ReadOnlySequence<byte> stream, byte[] contiguous)
    {
        var buffer = stream;
        if (StunMessageReader.TryReadMessage(ref buffer, StunReaderLimits.Default, out var frame, out _) != OperationStatus.Done)
        {
            return -1;
        }

        return StunMessageReader.TryParse(contiguous, StunReaderLimits.Default, out var message, out _) == OperationStatus.Done
            ? (int)frame.Length + message.AttributeCount
            : -1;
    }

    [Fact]
    public void BindingRequestParse_AndResponseWrite_AllocateNothing()
    {
        long checksum = 0;
        for (var i = 0; i < 1_000; i++)
        {
            checksum += BindingRoundTrip(BindingRequest, Client) + BindingRoundTrip(BindingRequest, ClientV6);
        }

        checksum = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Iterations; i++)
        {
            checksum += BindingRoundTrip(BindingRequest, (i & 1) == 0 ? Client : ClientV6);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        // Response: 20 header + XOR-MAPPED-ADDRESS (12 for IPv4, 24 for IPv6) + SOFTWARE "relay" (12) + FINGERPRINT (8); plus SOFTWARE's 17 request bytes.
        Assert.Equal((Iterations / 2 * (52 + 17)) + (Iterations / 2 * (64 + 17)), checksum);
    }

    [Fact]
    public void AuthenticatedRequest_VerifyAndSignedResponse_AllocateNothing()
    {
        var request = TestVectors.Rfc5769Request;
        long checksum = 0;
        for (var i = 0; i < 1_000; i++)
        {
            checksum += AuthenticatedRoundTrip(request, ShortTermKey, Client);
        }

        var expected = checksum / 1_000;
        Assert.True(expected > 0);

        checksum = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Iterations; i++)
        {
            checksum += AuthenticatedRoundTrip(request, ShortTermKey, Client);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.Equal(expected * Iterations, checksum);
    }

    [Fact]
    public void TcpFraming_OverTwoSegments_AllocatesNothing()
    {
        var request = TestVectors.Rfc5769Request;
        var stream = TestSegment.Split(request, 7);
        long checksum = 0;
        for (var i = 0; i < 1_000; i++)
        {
            checksum += FramedParse(stream, request);
        }

        checksum = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Iterations; i++)
        {
            checksum += FramedParse(stream, request);
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.Equal((long)(request.Length + 6) * Iterations, checksum);
    }
}
