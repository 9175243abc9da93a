using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Relay.Protocol.Stun;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Relay.Protocol.Tests;

/// <summary>
/// Deterministic fuzzing of the reader, the framer and the typed readers. Reproduce a failure with
/// RELAY_FUZZ_SEED=&lt;seed&gt; (and RELAY_FUZZ_CASES=&lt;n&gt; to run longer); the seed is printed.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    private const int DefaultSeed = 20261122;
    private const int DefaultMessageCases = 1_000_000;
    private const int DefaultValueCases = 250_000;

    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : fallback;

    [Fact]
    public void Messages_MutatedRandomAndSegmented_NeverThrow_AndStayConsistent()
    {
        var seed = Setting("RELAY_FUZZ_SEED", DefaultSeed);
        var cases = Setting("RELAY_FUZZ_CASES", DefaultMessageCases);
        output.WriteLine($"message fuzz: seed {seed} (RELAY_FUZZ_SEED), {cases:N0} cases (RELAY_FUZZ_CASES)");

        var fuzzer = new MessageFuzzer(seed);
        var stopwatch = Stopwatch.StartNew();
        for (var i = 0; i < cases; i++)
        {
            fuzzer.RunCase(i);
        }

        stopwatch.Stop();
        output.WriteLine($"{cases:N0} cases in {stopwatch.Elapsed.TotalSeconds:F1} s ({stopwatch.Elapsed.TotalMilliseconds * 1000 / cases:F2} µs/case)");
        output.WriteLine(fuzzer.Statistics());

        // The fuzzer must actually reach every outcome, or it is not testing what it claims to.
        foreach (var error in Enum.GetValues<StunParseError>().Where(e => e != StunParseError.None))
        {
            Assert.True(fuzzer.ErrorCounts[(int)error] > 0, $"fuzzer never produced {error}");
        }

        if (cases >= 100_000)
        {
            Assert.True(fuzzer.Done > cases / 20, "too few inputs parse: the mutations are too destructive");
            Assert.True(fuzzer.IntegrityVerified > 0 && fuzzer.Sha256Verified > 0 && fuzzer.FingerprintVerified > 0, "no unmutated seed verified");
            Assert.True(fuzzer.FramedDone > 0 && fuzzer.FramedLeftover > 0, "framing with a leftover never happened");
        }
    }

    [Fact]
    public void TypedReaders_OnRandomValues_NeverThrow_AndAgreeWithTheRules()
    {
        var seed = Setting("RELAY_FUZZ_SEED", DefaultSeed);
        var cases = Setting("RELAY_FUZZ_CASES", DefaultMessageCases) / 4;
        cases = cases > 0 ? cases : DefaultValueCases;
        output.WriteLine($"value fuzz: seed {seed}, {cases:N0} cases");
        var random = new Random(seed ^ 0x7A1E);
        var value = new byte[64];
        var writeBuffer = new byte[128];
        var unknown = new ushort[5];
        var addressTrue = 0;
        var stopwatch = Stopwatch.StartNew();
        for (var i = 0; i < cases; i++)
        {
            var length = random.Next(4) == 0 ? random.Next(65) : PickInteresting(random);
            random.NextBytes(value.AsSpan(0, length));
            if (length > 1 && random.Next(2) == 0)
            {
                value[1] = (byte)random.Next(4);
            }

            var exact = value.AsSpan(0, length).ToArray();
            try
            {
                addressTrue += CheckTypedReaders(exact, random, writeBuffer, unknown);
            }
            catch (Exception ex) when (ex is not XunitException)
            {
                Assert.Fail($"seed {seed} case {i}: {ex.GetType().Name} {ex.Message} on value {Convert.ToHexString(exact)}\n{ex.StackTrace}");
            }
        }

        output.WriteLine($"{cases:N0} values in {stopwatch.Elapsed.TotalSeconds:F1} s; {addressTrue:N0} decoded as addresses");
        Assert.True(addressTrue > 0);
    }

    private static int PickInteresting(Random random) => random.Next(10) switch
    {
        0 => 0,
        1 => 4,
        2 => 8,
        3 => 20,
        4 => random.Next(3, 6),
        5 => random.Next(7, 10),
        6 => random.Next(19, 22),
        7 => random.Next(15, 34),
        _ => random.Next(0, 24),
    };

    private static readonly StunAttributeType[] AddressTypes =
    [
        StunAttributeType.MappedAddress, StunAttributeType.XorMappedAddress, StunAttributeType.AlternateServer,
        StunAttributeType.ResponseOrigin, StunAttributeType.OtherAddress, StunAttributeType.XorPeerAddress,
        StunAttributeType.XorRelayedAddress,
    ];

    private static int CheckTypedReaders(byte[] value, Random random, byte[] writeBuffer, ushort[] unknown)
    {
        var length = value.Length;
        var isAddress = (length == 8 && value[1] == 1) || (length == 20 && value[1] == 2);

        // Plain address (RFC 8489 §14.1).
        var plain = StunAttributeReader.TryReadAddress(value, out var address);
        Assert.Equal(isAddress, plain);
        if (plain)
        {
            Assert.Equal(BinaryPrimitives.ReadUInt16BigEndian(value.AsSpan(2)), address.Port);
            Span<byte> bytes = stackalloc byte[16];
            var written = address.WriteAddressBytes(bytes);
            Assert.True(bytes[..written].SequenceEqual(value.AsSpan(4)));
        }

        // XOR address (RFC 8489 §14.2): decoding then encoding with the same transaction id is the identity
        // (apart from the first byte, which receivers ignore and the writer zeroes).
        Span<byte> id = stackalloc byte[12];
        random.NextBytes(id);
        var header = new StunHeader(0x0101, 0, StunConstants.MagicCookie, StunTransactionId.Read(id));
        var xor = StunAttributeReader.TryReadXorAddress(value, header, out var xorAddress);
        Assert.Equal(isAddress, xor);
        if (xor)
        {
            var writer = new StunMessageWriter(writeBuffer, 0x0101, header.TransactionId);
            writer.WriteXorAddress(AddressTypes[random.Next(AddressTypes.Length)], xorAddress);
            Assert.True(writer.Written[25..].SequenceEqual(value.AsSpan(1)));
        }

        // ERROR-CODE (RFC 8489 §14.8).
        var hasCode = StunAttributeReader.TryReadErrorCode(value, out var code, out var reason);
        Assert.Equal(length >= 4, hasCode);
        if (hasCode)
        {
            Assert.Equal(((value[2] & 7) * 100) + value[3], code);
            Assert.Equal(length - 4, reason.Length);
        }

        Assert.Equal(length == 4, StunAttributeReader.TryReadChangeRequest(value, out _, out _));
        Assert.Equal(length == 4, StunAttributeReader.TryReadResponsePort(value, out _));
        Assert.Equal(length == 4, StunAttributeReader.TryReadUInt32(value, out _));
        Assert.Equal(Math.Min(length / 2, unknown.Length), StunAttributeReader.ReadUnknownAttributes(value, unknown));

        // PASSWORD-ALGORITHMS walk: always terminates, offsets strictly increase and stay in bounds.
        var offset = random.Next(8) == 0 ? random.Next(-4, length + 8) : 0;
        var steps = 0;
        while (StunAttributeReader.TryReadPasswordAlgorithmEntry(value, ref offset, out _, out var parameters))
        {
            Assert.True(offset <= length && ++steps <= length);
            Assert.True(parameters.Length <= length);
        }

        // The rules never throw, and what they accept the typed readers can read.
        var type = (ushort)RandomType(random);
        if (StunAttributeRules.IsValid(type, value))
        {
            switch ((StunAttributeType)type)
            {
                case StunAttributeType.MappedAddress or StunAttributeType.XorMappedAddress or StunAttributeType.AlternateServer
                    or StunAttributeType.ResponseOrigin or StunAttributeType.OtherAddress or StunAttributeType.XorPeerAddress
                    or StunAttributeType.XorRelayedAddress:
                    Assert.True(plain && xor);
                    break;
                case StunAttributeType.ErrorCode:
                    Assert.True(hasCode && code is >= 300 and <= 699);
                    break;
                case StunAttributeType.PasswordAlgorithm:
                    var single = 0;
                    Assert.True(StunAttributeReader.TryReadPasswordAlgorithmEntry(value, ref single, out _, out _));
                    Assert.Equal(length, single);
                    break;
                case StunAttributeType.ChangeRequest:
                    Assert.True(StunAttributeReader.TryReadChangeRequest(value, out _, out _));
                    break;
            }
        }

        return plain ? 1 : 0;
    }

    internal static readonly StunAttributeType[] KnownTypes = Enum.GetValues<StunAttributeType>();

    internal static int RandomType(Random random) => random.Next(8) == 0 ? random.Next(0x10000) : (int)KnownTypes[random.Next(KnownTypes.Length)];

    /// <summary>One fuzzing session: a corpus, the mutators, the checks and counters.</summary>
    private sealed class MessageFuzzer
    {
        private const int MaxInput = 4096;
        private const int BigSize = MaxInput + 1024;

        private static readonly byte[] Key = [0x6b, 0x65, 0x79];

        private readonly int _seed;
        private readonly Random _random;
        private readonly byte[][] _corpus;
        private readonly byte[][] _corpusKeys;
        private byte[] _key = Key;
        private readonly byte[] _work = new byte[MaxInput * 2];
        private readonly byte[] _big = new byte[BigSize];
        private readonly byte[]?[] _exact = new byte[MaxInput + 1][];
        private readonly byte[] _scratch = new byte[MaxInput];
        private readonly ushort[] _unknown = new ushort[3];
        private int _length;
        private string _kind = "";
        private int _case;

        public MessageFuzzer(int seed)
        {
            _seed = seed;
            _random = new Random(seed);
            (_corpus, _corpusKeys) = BuildCorpus();
        }

        public long[] ErrorCounts { get; } = new long[16];

        public long Done { get; private set; }

        public long NeedMore { get; private set; }

        public long FramedDone { get; private set; }

        public long FramedLeftover { get; private set; }

        public long IntegrityVerified { get; private set; }

        public long Sha256Verified { get; private set; }

        public long FingerprintVerified { get; private set; }

        public long AttributesWalked { get; private set; }

        public string Statistics() =>
            $"Done {Done:N0}, NeedMoreData {NeedMore:N0}, attributes walked {AttributesWalked:N0}, framed Done {FramedDone:N0} ({FramedLeftover:N0} with leftover), "
            + $"verified MI {IntegrityVerified:N0} / MI-SHA256 {Sha256Verified:N0} / FINGERPRINT {FingerprintVerified:N0}; errors: "
            + string.Join(", ", Enum.GetValues<StunParseError>().Where(e => e != StunParseError.None).Select(e => $"{e} {ErrorCounts[(int)e]:N0}"));

        public void RunCase(int index)
        {
            _case = index;
            _key = Key;
            var unmutated = false;
            switch (_random.Next(20))
            {
                case 0:
                    FullyRandom();
                    break;
                case 1:
                case 2:
                    StructuredRandom();
                    break;
                default:
                    unmutated = Mutated();
                    break;
            }

            var limits = _random.Next(8) == 0
                ? new StunReaderLimits { MaxMessageSize = _random.Next(0, 400), MaxAttributes = _random.Next(0, 10) }
                : StunReaderLimits.Default;

            // Exact-size array: any read past the input throws.
            var exact = _exact[_length] ??= new byte[_length];
            _work.AsSpan(0, _length).CopyTo(exact);

            // The same bytes at the very end of a larger array.
            var tailStart = BigSize - _length;
            _work.AsSpan(0, _length).CopyTo(_big.AsSpan(tailStart));

            try
            {
                CheckParse(exact, _big.AsSpan(tailStart), limits, unmutated);
                CheckFraming(exact, limits);
            }
            catch (Exception ex) when (ex is not XunitException)
            {
                Fail($"{ex.GetType().Name}: {ex.Message}\n{ex.StackTrace}");
            }
        }

        private void Fail(string what) =>
            Assert.Fail($"fuzz seed {_seed} case {_case} ({_kind}, {_length} bytes): {what}\ninput: {Convert.ToHexString(_work, 0, _length)}");

        private void Check(bool condition, string what)
        {
            if (!condition)
            {
                Fail(what);
            }
        }

        private void CheckParse(byte[] exact, ReadOnlySpan<byte> tail, in StunReaderLimits limits, bool unmutated)
        {
            var status = StunMessageReader.TryParse(exact, limits, out var message, out var error);
            var tailStatus = StunMessageReader.TryParse(tail, limits, out var tailMessage, out var tailError);
            Check(status == tailStatus && error == tailError, $"exact-array and tail-of-array parses differ: {status}/{error} vs {tailStatus}/{tailError}");

            var n = exact.Length;
            var declared = n >= 4 ? BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(2)) : -1;
            switch (status)
            {
                case OperationStatus.Done:
                    Done++;
                    Check(error == StunParseError.None, "Done with an error");
                    Check(n == 20 + declared && declared % 4 == 0 && n <= limits.MaxMessageSize, "Done but the length is inconsistent");
                    Check(message.Raw.Length == n && message.Header.Length == declared, "Done but Raw/Header disagree with the input");
                    Check(tailMessage.AttributeCount == message.AttributeCount, "tail parse walked differently");
                    WalkDone(message, exact, limits);
                    if (unmutated)
                    {
                        Check(!message.HasMessageIntegrity || message.VerifyMessageIntegrity(_key), "an unmutated seed's MESSAGE-INTEGRITY failed");
                        Check(!message.HasMessageIntegritySha256 || message.VerifyMessageIntegritySha256(_key), "an unmutated seed's MESSAGE-INTEGRITY-SHA256 failed");
                        Check(!message.HasFingerprint || message.VerifyFingerprint(), "an unmutated seed's FINGERPRINT failed");
                    }

                    break;
                case OperationStatus.NeedMoreData:
                    NeedMore++;
                    Check(error == StunParseError.None, "NeedMoreData with an error");
                    Check(n < 20 || n < 20 + declared, "NeedMoreData for a complete message");
                    break;
                case OperationStatus.InvalidData:
                    ErrorCounts[(int)error]++;
                    Check(error != StunParseError.None, "InvalidData without a reason");
                    CheckErrorIsTrue(error, exact, declared, limits);
                    break;
                default:
                    Fail($"unexpected status {status}");
                    break;
            }
        }

        private void CheckErrorIsTrue(StunParseError error, byte[] exact, int declared, in StunReaderLimits limits)
        {
            var n = exact.Length;
            switch (error)
            {
                case StunParseError.NotStun:
                    Check(n > 0 && (exact[0] & 0xC0) != 0, "NotStun for a first byte with the top bits clear");
                    break;
                case StunParseError.LengthNotMultipleOfFour:
                    Check(declared % 4 != 0, "LengthNotMultipleOfFour for a multiple of four");
                    break;
                case StunParseError.TooLarge:
                    Check(20 + declared > limits.MaxMessageSize, "TooLarge within the limit");
                    break;
                case StunParseError.LengthMismatch:
                    Check(n > 20 + declared, "LengthMismatch for a datagram that is not longer than declared");
                    break;
                case StunParseError.TooManyAttributes:
                    Check(limits.MaxAttributes < (n - 20) / 4, "TooManyAttributes with room for fewer attributes than the limit");
                    break;
                default:
                    // Body errors are only reported once the framing is right.
                    Check(n == 20 + declared && declared % 4 == 0 && (exact[0] & 0xC0) == 0, $"{error} for a badly framed message");
                    break;
            }
        }

        private void WalkDone(StunMessage message, byte[] exact, in StunReaderLimits limits)
        {
            var n = exact.Length;
            var count = 0;
            var previousEnd = 20;
            var sawFingerprint = false;
            foreach (var attribute in message.EnumerateAll())
            {
                count++;
                AttributesWalked++;
                var offset = attribute.Offset;
                var length = attribute.Value.Length;
                Check(offset == previousEnd, "attributes are not contiguous");
                Check(offset >= 20 && offset % 4 == 0 && offset + 4 + length <= n, "attribute outside the message");
                Check(!sawFingerprint, "an attribute after FINGERPRINT");
                Check(attribute.Type == BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(offset)), "type is not the one on the wire");
                Check(attribute.Value.SequenceEqual(exact.AsSpan(offset + 4, length)), "value is not the bytes on the wire");
                sawFingerprint = attribute.Type == (ushort)StunAttributeType.Fingerprint;
                previousEnd = offset + 4 + ((length + 3) & ~3);
            }

            Check(previousEnd == n, "attributes do not end at the end of the message");
            Check(count == message.AttributeCount && count <= limits.MaxAttributes, "attribute count");
            Check(sawFingerprint == message.HasFingerprint, "HasFingerprint disagrees with the walk");

            // What a receiver processes (RFC 8489 §14.5: not what follows an integrity attribute) has passed
            // its rule, so the typed readers can trust it.
            var processed = 0;
            foreach (var attribute in message)
            {
                processed++;
                Check(attribute.Offset + 4 + attribute.Value.Length <= n, "processed attribute outside the message");
                Check(StunAttributeRules.IsValid(attribute.Type, attribute.Value), "an attribute that breaks its rule was accepted");
                TypedReadersAgree(attribute.Type, attribute.Value, message.Header);
            }

            Check(processed <= count, "more processed attributes than attributes");

            // Look-ups and checks never throw on a validated message, whatever it says.
            _ = message.TryGetAttribute((StunAttributeType)RandomType(_random), out var found);
            Check(found.Length <= n, "look-up returned a value larger than the message");
            _ = message.CollectUnknownComprehensionRequired([], _unknown);
            if (message.VerifyFingerprint())
            {
                FingerprintVerified++;
            }

            if (message.VerifyMessageIntegrity(_key))
            {
                IntegrityVerified++;
            }

            if (message.VerifyMessageIntegritySha256(_key))
            {
                Sha256Verified++;
            }
        }

        private void TypedReadersAgree(ushort type, ReadOnlySpan<byte> value, in StunHeader header)
        {
            switch ((StunAttributeType)type)
            {
                case StunAttributeType.MappedAddress or StunAttributeType.AlternateServer or StunAttributeType.ResponseOrigin
                    or StunAttributeType.OtherAddress or StunAttributeType.ResponseAddress or StunAttributeType.SourceAddress
                    or StunAttributeType.ChangedAddress or StunAttributeType.ReflectedFrom:
                    Check(StunAttributeReader.TryReadAddress(value, out _), "validated address unreadable");
                    break;
                case StunAttributeType.XorMappedAddress or StunAttributeType.XorPeerAddress or StunAttributeType.XorRelayedAddress:
                    Check(StunAttributeReader.TryReadXorAddress(value, header, out _), "validated XOR address unreadable");
                    break;
                case StunAttributeType.ErrorCode:
                    Check(StunAttributeReader.TryReadErrorCode(value, out var code, out _) && code is >= 300 and <= 699, "validated ERROR-CODE unreadable or out of range");
                    break;
                case StunAttributeType.ChangeRequest:
                    Check(StunAttributeReader.TryReadChangeRequest(value, out _, out _), "validated CHANGE-REQUEST unreadable");
                    break;
                case StunAttributeType.ResponsePort:
                    Check(StunAttributeReader.TryReadResponsePort(value, out _), "validated RESPONSE-PORT unreadable");
                    break;
                case StunAttributeType.Lifetime or StunAttributeType.Priority or StunAttributeType.ConnectionId:
                    Check(StunAttributeReader.TryReadUInt32(value, out _), "validated 32-bit attribute unreadable");
                    break;
                case StunAttributeType.PasswordAlgorithm:
                    Check(StunAttributeReader.TryReadPasswordAlgorithm(value, out _, out _), "validated PASSWORD-ALGORITHM unreadable");
                    break;
                case StunAttributeType.PasswordAlgorithms:
                    var offset = 0;
                    var entries = 0;
                    while (offset < value.Length && StunAttributeReader.TryReadPasswordAlgorithmEntry(value, ref offset, out _, out _))
                    {
                        entries++;
                    }

                    Check(entries > 0 && offset == value.Length, "validated PASSWORD-ALGORITHMS not walkable to its end");
                    break;
                case StunAttributeType.UnknownAttributes:
                    Check(StunAttributeReader.ReadUnknownAttributes(value, _unknown) == Math.Min(value.Length / 2, _unknown.Length), "UNKNOWN-ATTRIBUTES count");
                    break;
            }
        }

        private void CheckFraming(byte[] exact, in StunReaderLimits limits)
        {
            var n = exact.Length;
            var buffer = Segment(exact);
            var original = buffer;
            var status = StunMessageReader.TryReadMessage(ref buffer, limits, out var frame, out var error);
            var declared = n >= 4 ? BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(2)) : -1;
            switch (status)
            {
                case OperationStatus.Done:
                    FramedDone++;
                    var total = 20 + declared;
                    Check(error == StunParseError.None, "framed Done with an error");
                    Check(frame.Length == total && total <= n && total <= limits.MaxMessageSize && declared % 4 == 0, "framed message is not 20 + declared length bytes");
                    frame.CopyTo(_scratch);
                    Check(_scratch.AsSpan(0, total).SequenceEqual(exact.AsSpan(0, total)), "framed bytes differ from the input");
                    Check(buffer.Length == n - total, "leftover length");
                    Check(buffer.Start.Equals(original.GetPosition(total)) || buffer.IsEmpty, "leftover does not start right after the frame");
                    if (buffer.Length > 0)
                    {
                        FramedLeftover++;
                        buffer.CopyTo(_scratch);
                        Check(_scratch.AsSpan(0, n - total).SequenceEqual(exact.AsSpan(total)), "leftover bytes differ from the input");
                    }

                    break;
                case OperationStatus.NeedMoreData:
                    Check(error == StunParseError.None, "framed NeedMoreData with an error");
                    Check(n < 4 || n < 20 + declared, "framed NeedMoreData although a whole message is buffered");
                    Check(frame.IsEmpty && buffer.Start.Equals(original.Start) && buffer.Length == n, "framed NeedMoreData advanced the buffer");
                    break;
                case OperationStatus.InvalidData:
                    Check(error.IsHeaderError() && error != StunParseError.LengthMismatch, $"framer reported {error}");
                    Check(buffer.Start.Equals(original.Start) && buffer.Length == n, "framed InvalidData advanced the buffer");
                    break;
                default:
                    Fail($"unexpected framed status {status}");
                    break;
            }

            // The datagram parser must agree with the framer on every input.
            var parsed = StunMessageReader.TryParse(exact, limits, out _, out var parseError);
            switch (status)
            {
                case OperationStatus.NeedMoreData:
                    Check(parsed == OperationStatus.NeedMoreData, $"framer waits but parser says {parsed} {parseError}");
                    break;
                case OperationStatus.InvalidData:
                    Check(parsed == OperationStatus.InvalidData && parseError == error, $"framer says {error} but parser says {parsed} {parseError}");
                    break;
                case OperationStatus.Done when frame.Length == n:
                    Check(parsed == OperationStatus.Done || !parseError.IsHeaderError(), $"framer accepts the frame but parser says {parseError}");
                    break;
                case OperationStatus.Done:
                    Check(parseError == StunParseError.LengthMismatch, $"framer leaves a leftover but parser says {parsed} {parseError}");
                    break;
            }
        }

        private ReadOnlySequence<byte> Segment(byte[] exact) => TestSegment.RandomSplit(_random, exact);

        // ---- Inputs ----

        private void FullyRandom()
        {
            _kind = "random";
            _length = _random.Next(6) == 0 ? _random.Next(0, 24) : _random.Next(0, 300);
            _random.NextBytes(_work.AsSpan(0, _length));
            if (_length > 0 && _random.Next(2) == 0)
            {
                _work[0] &= 0x3F;
            }

            if (_length >= 20 && _random.Next(2) == 0)
            {
                _length &= ~3;
                BinaryPrimitives.WriteUInt16BigEndian(_work.AsSpan(2), (ushort)(_length - 20));
                BinaryPrimitives.WriteUInt32BigEndian(_work.AsSpan(4), StunConstants.MagicCookie);
            }
        }

        private void StructuredRandom()
        {
            _kind = "structured";
            var span = _work.AsSpan();
            BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)_random.Next(0x4000));
            BinaryPrimitives.WriteUInt32BigEndian(span[4..], StunConstants.MagicCookie);
            _random.NextBytes(span.Slice(8, 12));
            var offset = 20;
            var attributes = _random.Next(0, 12);
            for (var i = 0; i < attributes && offset < 1800; i++)
            {
                var type = (ushort)RandomType(_random);
                var length = _random.Next(3) == 0 ? PickBoundary(_random) : _random.Next(0, 40);
                BinaryPrimitives.WriteUInt16BigEndian(span[offset..], type);
                BinaryPrimitives.WriteUInt16BigEndian(span[(offset + 2)..], (ushort)length);
                var value = span.Slice(offset + 4, length);
                _random.NextBytes(value);
                if (length > 1 && _random.Next(2) == 0)
                {
                    value[1] = (byte)_random.Next(1, 3); // a plausible address family
                }

                if (length > 3 && _random.Next(2) == 0)
                {
                    value[2] = (byte)_random.Next(2, 8); // a plausible error class
                    value[3] = (byte)_random.Next(0, 101);
                }

                var padded = (length + 3) & ~3;
                span.Slice(offset + 4 + length, padded - length).Clear();
                offset += 4 + padded;
            }

            BinaryPrimitives.WriteUInt16BigEndian(span[2..], (ushort)(offset - 20));
            _length = offset;
        }

        private static int PickBoundary(Random random) => random.Next(14) switch
        {
            0 => 0,
            1 => 1,
            2 => 4,
            3 => 8,
            4 => 12,
            5 => 16,
            6 => 20,
            7 => 32,
            8 => 33,
            9 => random.Next(508, 514),
            10 => random.Next(762, 765),
            11 => random.Next(254, 257),
            12 => 36,
            _ => random.Next(0, 64),
        };

        /// <summary>A corpus message with 0-3 mutations; returns true when it is left unmutated.</summary>
        private bool Mutated()
        {
            var pick = _random.Next(_corpus.Length);
            var seed = _corpus[pick];
            _key = _corpusKeys[pick];
            seed.CopyTo(_work, 0);
            _length = seed.Length;
            var mutations = _random.Next(50) == 0 ? 0 : _random.Next(1, 4);
            _kind = mutations == 0 ? "seed" : "mutated";
            for (var i = 0; i < mutations; i++)
            {
                Mutate();
            }

            if (mutations > 0 && _length >= 20 && _random.Next(3) == 0)
            {
                // Repair the header length so the mutation reaches the attribute walk.
                BinaryPrimitives.WriteUInt16BigEndian(_work.AsSpan(2), (ushort)(_length - 20));
            }

            return mutations == 0;
        }

        private void Mutate()
        {
            var span = _work.AsSpan();
            switch (_random.Next(12))
            {
                case 0: // bit flips
                    for (var k = _random.Next(1, 5); k > 0 && _length > 0; k--)
                    {
                        span[_random.Next(_length)] ^= (byte)(1 << _random.Next(8));
                    }

                    break;
                case 1: // byte sets
                    for (var k = _random.Next(1, 4); k > 0 && _length > 0; k--)
                    {
                        span[_random.Next(_length)] = _random.Next(4) switch { 0 => 0x00, 1 => 0xFF, 2 => 0x80, _ => (byte)_random.Next(256) };
                    }

                    break;
                case 2: // truncation
                    _length = _random.Next(_length + 1);
                    break;
                case 3: // header length edits
                    if (_length >= 4)
                    {
                        var current = BinaryPrimitives.ReadUInt16BigEndian(span[2..]);
                        var edited = _random.Next(6) switch
                        {
                            0 => current + 4,
                            1 => current - 4,
                            2 => current + _random.Next(1, 4),
                            3 => 0xFFFC,
                            4 => 0,
                            _ => _random.Next(0x10000),
                        };
                        BinaryPrimitives.WriteUInt16BigEndian(span[2..], (ushort)edited);
                    }

                    break;
                case 4: // attribute length edits
                case 5:
                    if (PickAttribute(out var at, out var atLength))
                    {
                        var edited = _random.Next(6) switch
                        {
                            0 => atLength + _random.Next(1, 9),
                            1 => atLength - _random.Next(1, 9),
                            2 => 0,
                            3 => 0xFFFF,
                            4 => _random.Next(0, 64),
                            _ => _random.Next(0x10000),
                        };
                        BinaryPrimitives.WriteUInt16BigEndian(span[(at + 2)..], (ushort)Math.Clamp(edited, 0, 0xFFFF));
                    }

                    break;
                case 6: // attribute type edits: a value under a type with other rules
                    if (PickAttribute(out at, out _))
                    {
                        BinaryPrimitives.WriteUInt16BigEndian(span[at..], (ushort)RandomType(_random));
                    }

                    break;
                case 7: // duplicate an attribute in place (a later duplicate, or one after an integrity attribute)
                    if (PickAttribute(out at, out atLength))
                    {
                        var size = 4 + ((atLength + 3) & ~3);
                        if (at + size <= _length && _length + size <= MaxInput)
                        {
                            var insertAt = _random.Next(2) == 0 ? at : NextAttributeBoundary();
                            span.Slice(insertAt, _length - insertAt).CopyTo(span[(insertAt + size)..]);
                            var source = insertAt <= at ? at + size : at;
                            span.Slice(source, size).CopyTo(span[insertAt..]);
                            _length += size;
                        }
                    }

                    break;
                case 8: // insertion of random bytes
                    {
                        var count = _random.Next(2) == 0 ? 4 * _random.Next(1, 5) : _random.Next(1, 9);
                        if (_length + count <= MaxInput)
                        {
                            var insertAt = _random.Next(2) == 0 ? NextAttributeBoundary() : _random.Next(_length + 1);
                            span.Slice(insertAt, _length - insertAt).CopyTo(span[(insertAt + count)..]);
                            _random.NextBytes(span.Slice(insertAt, count));
                            _length += count;
                        }
                    }

                    break;
                case 9: // deletion of a range
                    if (_length > 0)
                    {
                        var from = _random.Next(_length);
                        var count = Math.Min(_length - from, _random.Next(1, 9));
                        span.Slice(from + count, _length - from - count).CopyTo(span[from..]);
                        _length -= count;
                    }

                    break;
                case 10: // splice: this message's head, another's attributes
                    {
                        var other = _corpus[_random.Next(_corpus.Length)];
                        var cut = Math.Min(_length, 20 + (4 * _random.Next(0, 8)));
                        var tail = other.Length > 20 ? other.AsSpan(20) : ReadOnlySpan<byte>.Empty;
                        if (cut + tail.Length <= MaxInput)
                        {
                            tail.CopyTo(span[cut..]);
                            _length = cut + tail.Length;
                        }
                    }

                    break;
                default: // append a random attribute, possibly after FINGERPRINT or an integrity attribute
                    {
                        var length = _random.Next(2) == 0 ? PickBoundary(_random) : _random.Next(0, 24);
                        var padded = (length + 3) & ~3;
                        if (_length + 4 + padded <= MaxInput)
                        {
                            BinaryPrimitives.WriteUInt16BigEndian(span[_length..], (ushort)RandomType(_random));
                            BinaryPrimitives.WriteUInt16BigEndian(span[(_length + 2)..], (ushort)length);
                            _random.NextBytes(span.Slice(_length + 4, padded));
                            _length += 4 + padded;
                        }
                    }

                    break;
            }
        }

        /// <summary>Picks a random attribute by walking the (possibly already mutated) message.</summary>
        private bool PickAttribute(out int offset, out int length)
        {
            Span<int> starts = stackalloc int[64];
            var count = 0;
            var at = 20;
            while (at + 4 <= _length && count < starts.Length)
            {
                starts[count++] = at;
                at += 4 + ((BinaryPrimitives.ReadUInt16BigEndian(_work.AsSpan(at + 2)) + 3) & ~3);
            }

            if (count == 0)
            {
                offset = length = 0;
                return false;
            }

            offset = starts[_random.Next(count)];
            length = BinaryPrimitives.ReadUInt16BigEndian(_work.AsSpan(offset + 2));
            return true;
        }

        private int NextAttributeBoundary() =>
            PickAttribute(out var at, out var length) ? Math.Min(_length, at + 4 + ((length + 3) & ~3)) : Math.Min(_length, 20);

        /// <summary>The vectors (with their own keys) and writer-made messages covering every attribute rule (signed with <see cref="Key"/>).</summary>
        private static (byte[][] Messages, byte[][] Keys) BuildCorpus()
        {
            var shortTerm = StunCredentials.ComputeShortTermKey(TestVectors.ShortTermPassword);
            var corpus = new List<byte[]>
            {
                TestVectors.Rfc5769Request, TestVectors.Rfc5769Ipv4Response, TestVectors.Rfc5769Ipv6Response,
                TestVectors.Rfc5769LongTermRequest, TestVectors.Rfc8489B1,
            };
            var keys = new List<byte[]> { shortTerm, shortTerm, shortTerm, TestVectors.Rfc5769LongTermKey(), TestVectors.Rfc8489LongTermKey() };

            var txId = TestVectors.TxId(TestVectors.SampleTransactionId);
            var buffer = new byte[2048];
            var v4 = StunAddress.FromIPv4([192, 0, 2, 1], 32853);
            var v6 = StunAddress.FromIPv6(TestVectors.Hex("2001 0db8 1234 5678 0011 2233 4455 6677"), 32853);

            var w = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.ErrorResponse), txId);
            w.WriteErrorCode(420, "Unknown Attribute"u8);
            w.WriteUnknownAttributes([0x7F01, 0x0003, 0x0031]);
            w.WriteAttribute(StunAttributeType.Software, "relay"u8);
            w.WriteFingerprint();
            corpus.Add(w.Written.ToArray());

            w = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Allocate, StunClass.Request), txId);
            w.WriteUInt32(StunAttributeType.RequestedTransport, 0x11000000);
            w.WriteUInt32(StunAttributeType.Lifetime, 600);
            w.WriteAttribute(StunAttributeType.DontFragment, []);
            w.WriteAttribute(StunAttributeType.EvenPort, [0x80]);
            w.WriteAttribute(StunAttributeType.ReservationToken, new byte[8]);
            w.WriteAttribute(StunAttributeType.Username, "user"u8);
            w.WriteAttribute(StunAttributeType.Realm, "example.org"u8);
            w.WriteAttribute(StunAttributeType.Nonce, "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"u8);
            w.WritePasswordAlgorithms([StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5]);
            w.WritePasswordAlgorithm(StunPasswordAlgorithm.Sha256);
            w.WriteMessageIntegrity(Key);
            w.WriteMessageIntegritySha256(Key, 16);
            w.WriteFingerprint();
            corpus.Add(w.Written.ToArray());

            w = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), txId);
            w.WriteAddress(StunAttributeType.MappedAddress, v6);
            w.WriteXorAddress(StunAttributeType.XorMappedAddress, v6);
            w.WriteAddress(StunAttributeType.ResponseOrigin, v4);
            w.WriteAddress(StunAttributeType.OtherAddress, v6);
            w.WriteAddress(StunAttributeType.AlternateServer, v4);
            w.WriteAttribute(StunAttributeType.AlternateDomain, "stun.example.org"u8);
            w.WriteMessageIntegritySha256(Key);
            w.WriteFingerprint();
            corpus.Add(w.Written.ToArray());

            w = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), txId);
            w.WriteChangeRequest(true, true);
            w.WriteResponsePort(40000);
            w.WritePadding(7);
            w.WriteUInt32(StunAttributeType.Priority, 0x6e0001ff);
            w.WriteAttribute(StunAttributeType.UseCandidate, []);
            w.WriteAttribute(StunAttributeType.IceControlling, new byte[8]);
            w.WriteAttribute(StunAttributeType.Username, "evtj:h6vY"u8);
            w.WriteMessageIntegrity(Key);
            w.WriteFingerprint();
            corpus.Add(w.Written.ToArray());

            w = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.ChannelBind, StunClass.Request), txId);
            w.WriteUInt32(StunAttributeType.ChannelNumber, 0x40000000);
            w.WriteXorAddress(StunAttributeType.XorPeerAddress, v4);
            w.WriteXorAddress(StunAttributeType.XorRelayedAddress, v6);
            w.WriteAttribute(StunAttributeType.Data, "hello"u8);
            w.WriteUInt32(StunAttributeType.ConnectionId, 7);
            w.WriteUInt32(StunAttributeType.RequestedAddressFamily, 0x02000000);
            w.WriteUInt32(StunAttributeType.AdditionalAddressFamily, 0x02000000);
            w.WriteAttribute(StunAttributeType.Userhash, new byte[32]);
            corpus.Add(w.Written.ToArray());

            w = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Indication), txId);
            corpus.Add(w.Written.ToArray());

            while (keys.Count < corpus.Count)
            {
                keys.Add(Key);
            }

            return (corpus.ToArray(), keys.ToArray());
        }
    }
}
