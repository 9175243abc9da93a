using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Relay.Protocol.Turn;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Relay.Protocol.Tests;

/// <summary>
/// Deterministic fuzzing of both ChannelData entry points against an independent model of RFC 8656 §12.4-
/// §12.6. Reproduce a failure with RELAY_FUZZ_SEED=&lt;seed&gt; (and RELAY_FUZZ_CASES=&lt;n&gt; to run
/// longer); the seed is printed.
/// </summary>
public sealed class ChannelDataFuzzTests(ITestOutputHelper output)
{
    private const int DefaultSeed = 20268656;
    private const int DefaultCases = 1_000_000;

    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : fallback;

    [Fact]
    public void DatagramsAndStreams_MutatedRandomAndSegmented_NeverThrow_AndMatchTheModel()
    {
        var seed = Setting("RELAY_FUZZ_SEED", DefaultSeed);
        var cases = Setting("RELAY_FUZZ_CASES", DefaultCases);
        output.WriteLine($"ChannelData fuzz: seed {seed} (RELAY_FUZZ_SEED), {cases:N0} cases (RELAY_FUZZ_CASES), each through both entry points");

        var fuzzer = new ChannelDataFuzzer(seed);
        var stopwatch = Stopwatch.StartNew();
        for (var i = 0; i < cases; i++)
        {
            fuzzer.RunCase(i);
        }

        stopwatch.Stop();
        output.WriteLine($"{cases:N0} cases in {stopwatch.Elapsed.TotalSeconds:F1} s ({stopwatch.Elapsed.TotalMilliseconds * 1000 / cases:F2} µs/case)");
        output.WriteLine(fuzzer.Statistics());

        // The fuzzer must reach every outcome, or it is not testing what it claims to.
        foreach (var error in Enum.GetValues<ChannelDataError>().Where(e => e != ChannelDataError.None))
        {
            Assert.True(fuzzer.DatagramErrors[(int)error] > 0, $"datagram fuzz never produced {error}");
            Assert.True(error == ChannelDataError.LengthMismatch || fuzzer.StreamErrors[(int)error] > 0, $"stream fuzz never produced {error}");
        }

        if (cases >= 100_000)
        {
            Assert.True(fuzzer.DatagramDone > cases / 10, "too few datagrams parse: the inputs are too destructive");
            Assert.True(fuzzer.StreamDone > cases / 10, "too few stream messages are framed");
            Assert.True(fuzzer.StreamMultiple > cases / 100, "back-to-back messages in one buffer are too rare");
            Assert.True(fuzzer.StreamNeedMore > cases / 100, "NeedMoreData is too rare");
        }
    }

    /// <summary>One fuzzing session: the inputs, the model, the checks and counters.</summary>
    private sealed class ChannelDataFuzzer
    {
        private const int MaxInput = 4096;
        private const int BigSize = MaxInput + 1024;

        private readonly int _seed;
        private readonly Random _random;
        private readonly byte[][] _corpus;
        private readonly byte[] _work = new byte[MaxInput * 2];
        private readonly byte[] _big = new byte[BigSize];
        private readonly byte[]?[] _exact = new byte[MaxInput + 1][];
        private readonly byte[] _scratch = new byte[MaxInput];
        private int _length;
        private string _kind = "";
        private int _case;

        public ChannelDataFuzzer(int seed)
        {
            _seed = seed;
            _random = new Random(seed);
            _corpus = ChannelDataVectors.All().SelectMany(v => new[] { v.Stream, v.Unpadded })
                .Append(ChannelDataVectors.CoturnClientReservedChannel)
                .ToArray();
        }

        public long[] DatagramErrors { get; } = new long[8];

        public long[] StreamErrors { get; } = new long[8];

        public long DatagramDone { get; private set; }

        public long StreamDone { get; private set; }

        public long StreamMultiple { get; private set; }

        public long StreamNeedMore { get; private set; }

        public string Statistics() =>
            $"datagram: accepted {DatagramDone:N0}; stream: Done {StreamDone:N0} ({StreamMultiple:N0} inputs with 2+ messages), ended on NeedMoreData {StreamNeedMore:N0}; errors (datagram/stream): "
            + string.Join(", ", Enum.GetValues<ChannelDataError>().Where(e => e != ChannelDataError.None).Select(e => $"{e} {DatagramErrors[(int)e]:N0}/{StreamErrors[(int)e]:N0}"));

        public void RunCase(int index)
        {
            _case = index;
            switch (_random.Next(10))
            {
                case 0:
                    FullyRandom();
                    break;
                case 1:
                case 2:
                case 3:
                    Structured();
                    break;
                default:
                    Mutated();
                    break;
            }

            var limits = _random.Next(6) == 0
                ? new ChannelDataLimits { MaxDataLength = _random.Next(0, 300) }
                : ChannelDataLimits.Default;

            // Exact-size array: any read past the input throws.
            var exact = _exact[_length] ??= new byte[_length];
            _work.AsSpan(0, _length).CopyTo(exact);

            // The same bytes at the very end of a larger array.
            var tailStart = BigSize - _length;
            _work.AsSpan(0, _length).CopyTo(_big.AsSpan(tailStart));

            try
            {
                CheckDatagram(exact, _big.AsSpan(tailStart), limits);
                CheckStream(exact, limits);
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

        // ---- The model: RFC 8656 §12 Table 2/3, §12.4, §12.5, §12.6, written independently of the reader ----

        private static ChannelDataError ModelFirstByte(byte first) => first switch
        {
            >= 0x40 and <= 0x4F => ChannelDataError.None,
            >= 0x50 and <= 0x7F => ChannelDataError.ReservedChannel,
            _ => ChannelDataError.NotChannelData,
        };

        private static ChannelDataError ModelDatagram(ReadOnlySpan<byte> input, in ChannelDataLimits limits)
        {
            var first = input.IsEmpty ? ChannelDataError.None : ModelFirstByte(input[0]);
            if (first != ChannelDataError.None)
            {
                return first;
            }

            if (input.Length < 4)
            {
                return ChannelDataError.LengthMismatch;
            }

            var declared = (input[2] << 8) | input[3];
            return declared > limits.MaxDataLength ? ChannelDataError.TooLarge
                : input.Length < 4 + declared ? ChannelDataError.LengthMismatch
                : ChannelDataError.None;
        }

        private static OperationStatus ModelStream(ReadOnlySpan<byte> rest, in ChannelDataLimits limits, out ChannelDataError error, out int consumed)
        {
            consumed = 0;
            error = rest.IsEmpty ? ChannelDataError.None : ModelFirstByte(rest[0]);
            if (error != ChannelDataError.None)
            {
                return OperationStatus.InvalidData;
            }

            if (rest.Length < 4)
            {
                return OperationStatus.NeedMoreData;
            }

            var declared = (rest[2] << 8) | rest[3];
            if (declared > limits.MaxDataLength)
            {
                error = ChannelDataError.TooLarge;
                return OperationStatus.InvalidData;
            }

            var padded = 4 + declared + ((4 - (declared % 4)) % 4);
            if (rest.Length < padded)
            {
                return OperationStatus.NeedMoreData;
            }

            consumed = padded;
            return OperationStatus.Done;
        }

        // ---- Checks ----

        private void CheckDatagram(byte[] exact, ReadOnlySpan<byte> tail, in ChannelDataLimits limits)
        {
            var ok = ChannelDataReader.TryRead(exact, limits, out var channel, out var data, out var error);
            var tailOk = ChannelDataReader.TryRead(tail, limits, out var tailChannel, out var tailData, out var tailError);
            Check(ok == tailOk && error == tailError && channel == tailChannel && data.Length == tailData.Length, "exact-array and tail-of-array reads differ");

            var expected = ModelDatagram(exact, limits);
            Check(error == expected, $"datagram: reader says {error}, model says {expected}");
            Check(ok == (error == ChannelDataError.None), $"datagram returned {ok} with {error}");
            Check(exact.Length < 4 ? channel == 0 : channel == BinaryPrimitives.ReadUInt16BigEndian(exact), "datagram channel is not the header's");
            if (ok)
            {
                DatagramDone++;
                var declared = BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(2));
                Check(TurnChannel.IsValidNumber(channel), "accepted a channel outside 0x4000-0x4FFF");
                Check(data.Length == declared && declared <= limits.MaxDataLength, "data length is not the header's Length");
                Check(data.IsEmpty || (exact.AsSpan().Overlaps(data, out var offset) && offset == 4), "data is not the input right after the header");
                Check(tailData.IsEmpty || (tail.Overlaps(tailData, out var tailOffset) && tailOffset == 4), "tail data is not the input right after the header");
            }
            else
            {
                DatagramErrors[(int)error]++;
                Check(data.IsEmpty, "rejected datagram with data");
            }
        }

        private void CheckStream(byte[] exact, in ChannelDataLimits limits)
        {
            var n = exact.Length;
            var buffer = Segment(exact);
            var original = buffer;
            var offset = 0;
            var messages = 0;
            while (true)
            {
                var before = buffer;
                var status = ChannelDataReader.TryRead(ref buffer, limits, out var channel, out var data, out var error);
                var expected = ModelStream(exact.AsSpan(offset), limits, out var expectedError, out var consumed);
                Check(status == expected && error == expectedError, $"stream at {offset}: reader says {status}/{error}, model says {expected}/{expectedError}");
                if (status != OperationStatus.Done)
                {
                    Check(data.IsEmpty, $"{status} with data");
                    Check(buffer.Start.Equals(before.Start) && buffer.End.Equals(before.End), $"{status} advanced the buffer");
                    Check(n - offset < 4 ? channel == 0 : channel == BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(offset)), "stream channel is not the header's");
                    if (status == OperationStatus.NeedMoreData)
                    {
                        StreamNeedMore++;
                    }
                    else
                    {
                        StreamErrors[(int)error]++;
                    }

                    break;
                }

                StreamDone++;
                messages++;
                var declared = BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(offset + 2));
                Check(channel == BinaryPrimitives.ReadUInt16BigEndian(exact.AsSpan(offset)) && TurnChannel.IsValidNumber(channel), "Done with a wrong or invalid channel");
                Check(data.Length == declared && declared <= limits.MaxDataLength, "Done data length is not the header's Length");
                Check(data.Start.Equals(original.GetPosition(offset + 4)), "data does not start right after the header");
                data.CopyTo(_scratch);
                Check(_scratch.AsSpan(0, declared).SequenceEqual(exact.AsSpan(offset + 4, declared)), "data bytes differ from the input");
                offset += consumed;
                Check(offset <= n && buffer.Length == n - offset, "buffer not advanced exactly past the padding");
                Check(buffer.IsEmpty || buffer.Start.Equals(original.GetPosition(offset)), "leftover does not start right after the padding");
            }

            if (messages > 1)
            {
                StreamMultiple++;
            }
        }

        private ReadOnlySequence<byte> Segment(byte[] exact) => TestSegment.RandomSplit(_random, exact, headerBias: TurnChannel.HeaderLength);

        // ---- Inputs ----

        private void FullyRandom()
        {
            _kind = "random";
            _length = _random.Next(4) == 0 ? _random.Next(0, 8) : _random.Next(0, 300);
            _random.NextBytes(_work.AsSpan(0, _length));
            if (_length > 0 && _random.Next(2) == 0)
            {
                _work[0] = (byte)(0x40 | (_work[0] & 0x0F));
            }

            if (_length >= 4 && _random.Next(2) == 0)
            {
                // A declared length near what is there, so some random inputs frame.
                var declared = Math.Max(0, _length - 4 - _random.Next(0, 5));
                BinaryPrimitives.WriteUInt16BigEndian(_work.AsSpan(2), (ushort)declared);
            }
        }

        /// <summary>1-4 messages back to back, mostly well-formed, sometimes unpadded, sometimes cut short.</summary>
        private void Structured()
        {
            _kind = "structured";
            var span = _work.AsSpan();
            var offset = 0;
            var count = _random.Next(1, 5);
            for (var i = 0; i < count && offset < 3000; i++)
            {
                var channel = _random.Next(10) switch
                {
                    0 => _random.Next(0x10000),
                    1 => _random.Next(0x5000, 0x8000),
                    2 => _random.Next(2) == 0 ? TurnChannel.MinNumber : TurnChannel.MaxNumber,
                    _ => _random.Next(TurnChannel.MinNumber, TurnChannel.MaxNumber + 1),
                };
                var length = PickLength(_random);
                var pad = _random.Next(8) != 0;
                var total = pad ? (4 + length + 3) & ~3 : 4 + length;
                BinaryPrimitives.WriteUInt16BigEndian(span[offset..], (ushort)channel);
                BinaryPrimitives.WriteUInt16BigEndian(span[(offset + 2)..], (ushort)length);
                _random.NextBytes(span.Slice(offset + 4, total - 4));
                offset += total;
            }

            _length = _random.Next(4) == 0 ? _random.Next(offset + 1) : offset;
            if (_random.Next(8) == 0)
            {
                var extra = _random.Next(1, 8);
                _random.NextBytes(span.Slice(_length, extra));
                _length += extra;
            }
        }

        private static int PickLength(Random random) => random.Next(12) switch
        {
            0 => 0,
            1 => random.Next(1, 4),
            2 => 4,
            3 => random.Next(5, 9),
            4 => random.Next(250, 302),
            5 => random.Next(1196, 1205),
            _ => random.Next(0, 64),
        };

        /// <summary>A vector (padded or not) with 1-3 mutations, sometimes doubled back to back first.</summary>
        private void Mutated()
        {
            var seed = _corpus[_random.Next(_corpus.Length)];
            seed.CopyTo(_work, 0);
            _length = seed.Length;
            if (_random.Next(4) == 0 && _length * 2 <= MaxInput)
            {
                var other = _corpus[_random.Next(_corpus.Length)];
                other.CopyTo(_work, _length);
                _length += other.Length;
            }

            var mutations = _random.Next(10) == 0 ? 0 : _random.Next(1, 4);
            _kind = mutations == 0 ? "vector" : "mutated";
            for (var i = 0; i < mutations; i++)
            {
                Mutate();
            }
        }

        private void Mutate()
        {
            var span = _work.AsSpan();
            switch (_random.Next(8))
            {
                case 0: // bit flips
                    for (var k = _random.Next(1, 4); k > 0 && _length > 0; k--)
                    {
                        span[_random.Next(_length)] ^= (byte)(1 << _random.Next(8));
                    }

                    break;
                case 1: // first byte: another protocol, a reserved channel, or a valid one
                    if (_length > 0)
                    {
                        span[0] = (byte)_random.Next(256);
                    }

                    break;
                case 2: // truncation
                    _length = _random.Next(_length + 1);
                    break;
                case 3: // Length edits around the truth
                    if (_length >= 4)
                    {
                        var current = BinaryPrimitives.ReadUInt16BigEndian(span[2..]);
                        var edited = _random.Next(5) switch
                        {
                            0 => current + _random.Next(1, 5),
                            1 => current - _random.Next(1, 5),
                            2 => 0xFFFF,
                            3 => _random.Next(0x10000),
                            _ => _length - 4,
                        };
                        BinaryPrimitives.WriteUInt16BigEndian(span[2..], (ushort)edited);
                    }

                    break;
                case 4: // trailing bytes
                    var extra = _random.Next(1, 9);
                    _random.NextBytes(span.Slice(_length, extra));
                    _length += extra;
                    break;
                case 5: // byte sets
                    for (var k = _random.Next(1, 3); k > 0 && _length > 0; k--)
                    {
                        span[_random.Next(_length)] = _random.Next(3) switch { 0 => 0x00, 1 => 0xFF, _ => (byte)_random.Next(256) };
                    }

                    break;
                case 6: // drop one byte from the middle
                    if (_length > 1)
                    {
                        var at = _random.Next(_length);
                        span[(at + 1).._length].CopyTo(span[at..]);
                        _length--;
                    }

                    break;
                default: // a valid channel number in the first two bytes
                    if (_length >= 2)
                    {
                        BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)_random.Next(TurnChannel.MinNumber, TurnChannel.MaxNumber + 1));
                    }

                    break;
            }
        }
    }
}
