using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text.Unicode;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// The MQTT data representations (§1.5): readers over a frame body that has fully arrived, so running
/// out of bytes inside a body is a malformed packet, never "need more data".
/// </summary>
internal static class MqttWire
{
    /// <summary>
    /// Variable Byte Integer (§1.5.5): 7 bits per byte, least significant group first, at most four
    /// bytes. A fourth byte with the continuation bit set is malformed. Non-minimal encodings are read:
    /// [MQTT-1.5.5-1] binds the sender only.
    /// </summary>
    public static bool TryReadVariableByteInteger(ref SequenceReader<byte> reader, out int value)
    {
        value = 0;
        for (var i = 0; i < 4; i++)
        {
            if (!reader.TryRead(out var b))
            {
                return false;
            }

            value |= (b & 0x7F) << (7 * i);
            if ((b & 0x80) == 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Two Byte Integer (§1.5.2), big-endian.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryReadUInt16(ref SequenceReader<byte> reader, out ushort value)
    {
        var ok = reader.TryReadBigEndian(out short raw);
        value = (ushort)raw;
        return ok;
    }

    /// <summary>Four Byte Integer (§1.5.3), big-endian.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryReadUInt32(ref SequenceReader<byte> reader, out uint value)
    {
        var ok = reader.TryReadBigEndian(out int raw);
        value = (uint)raw;
        return ok;
    }

    /// <summary>Binary Data (§1.5.6): a Two Byte Integer length followed by that many bytes.</summary>
    public static bool TryReadBinary(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> data)
    {
        if (!TryReadUInt16(ref reader, out var length))
        {
            data = default;
            return false;
        }

        return reader.TryReadExact(length, out data);
    }

    /// <summary>
    /// UTF-8 Encoded String (§1.5.4): length-prefixed, well-formed UTF-8 (no surrogate code points)
    /// [MQTT-1.5.4-1], and no U+0000 [MQTT-1.5.4-2].
    /// </summary>
    public static MqttDecodeError ReadString(ref SequenceReader<byte> reader, out ReadOnlySequence<byte> text)
    {
        if (!TryReadBinary(ref reader, out text))
        {
            return MqttDecodeError.MalformedPacket;
        }

        return IsValidUtf8(text) ? MqttDecodeError.None : MqttDecodeError.InvalidUtf8;
    }

    /// <summary>Well-formed UTF-8 without U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).</summary>
    public static bool IsValidUtf8(in ReadOnlySequence<byte> text)
    {
        if (text.IsSingleSegment)
        {
            var span = text.FirstSpan;
            return !span.Contains((byte)0) && Utf8.IsValid(span);
        }

        // A code point may straddle segments, so carry the decoder state across them.
        var state = default(Utf8State);
        foreach (var segment in text)
        {
            if (!state.Feed(segment.Span))
            {
                return false;
            }
        }

        return state.Pending == 0;
    }

    /// <summary>Well-formed UTF-8 without U+0000, for a contiguous span.</summary>
    public static bool IsValidUtf8(ReadOnlySpan<byte> text) => !text.Contains((byte)0) && Utf8.IsValid(text);

    /// <summary>A contiguous view: the first segment, or up to <paramref name="scratch"/>.Length bytes copied; for short comparisons.</summary>
    public static ReadOnlySpan<byte> AsSpan(in ReadOnlySequence<byte> sequence, Span<byte> scratch)
    {
        if (sequence.IsSingleSegment)
        {
            return sequence.FirstSpan;
        }

        var length = (int)Math.Min(sequence.Length, scratch.Length);
        sequence.Slice(0, length).CopyTo(scratch);
        return scratch[..length];
    }

    /// <summary>Bytes a Variable Byte Integer for <paramref name="value"/> takes when minimally encoded.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int VariableByteIntegerSize(int value) => value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;

    /// <summary>Writes <paramref name="value"/> as a minimal Variable Byte Integer ([MQTT-1.5.5-1]); returns the bytes written.</summary>
    public static int WriteVariableByteInteger(Span<byte> destination, int value)
    {
        var i = 0;
        do
        {
            var b = (byte)(value & 0x7F);
            value >>= 7;
            if (value > 0)
            {
                b |= 0x80;
            }

            destination[i++] = b;
        }
        while (value > 0);
        return i;
    }

    /// <summary>Writes a big-endian Two Byte Integer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WriteUInt16(Span<byte> destination, ushort value) => BinaryPrimitives.WriteUInt16BigEndian(destination, value);

    /// <summary>A byte-at-a-time UTF-8 validator (Unicode Table 3-7) for text split across segments.</summary>
    private struct Utf8State
    {
        public int Pending;
        private byte _low;
        private byte _high;

        public bool Feed(ReadOnlySpan<byte> bytes)
        {
            foreach (var b in bytes)
            {
                if (Pending == 0)
                {
                    if (b < 0x80)
                    {
                        if (b == 0)
                        {
                            return false;
                        }

                        continue;
                    }

                    _low = 0x80;
                    _high = 0xBF;
                    if (b < 0xC2)
                    {
                        return false;
                    }
                    else if (b < 0xE0)
                    {
                        Pending = 1;
                    }
                    else if (b < 0xF0)
                    {
                        Pending = 2;
                        // E0 would be overlong, ED would reach the surrogates D800-DFFF.
                        if (b == 0xE0)
                        {
                            _low = 0xA0;
                        }
                        else if (b == 0xED)
                        {
                            _high = 0x9F;
                        }
                    }
                    else if (b < 0xF5)
                    {
                        Pending = 3;
                        // F0 would be overlong, F4 beyond U+10FFFF.
                        if (b == 0xF0)
                        {
                            _low = 0x90;
                        }
                        else if (b == 0xF4)
                        {
                            _high = 0x8F;
                        }
                    }
                    else
                    {
                        return false;
                    }
                }
                else
                {
                    if (b < _low || b > _high)
                    {
                        return false;
                    }

                    _low = 0x80;
                    _high = 0xBF;
                    Pending--;
                }
            }

            return true;
        }
    }
}
