using System.Buffers.Binary;

namespace Relay.Protocol.Tests;

/// <summary>One ChannelData message as it travels over TCP (padded), with what a reader must report.</summary>
internal sealed record ChannelDataVector(string Name, byte[] Stream, ushort Channel, byte[] Data)
{
    /// <summary>The message without padding: the shortest datagram that carries it (RFC 8656 §12.5).</summary>
    public byte[] Unpadded => Stream.AsSpan(0, 4 + Data.Length).ToArray();
}

/// <summary>
/// ChannelData messages byte for byte (RFC 8656 §12.4). No RFC publishes ChannelData test vectors, so these
/// are hand-built from the §12.4 layout, plus messages captured from coturn 4.6.1.
/// </summary>
/// <remarks>
/// The captures were taken with a logging TCP proxy between <c>turnutils_uclient -t -l 21</c> and
/// <c>turnserver</c> on loopback (channel bound by the client, 21 bytes of uclient's test payload). They show
/// two things a reader must cope with: the client pads with zeros, but the server pads with whatever was in
/// its buffer (07 07 07), so a receiver must never look at padding; and uclient picks channel numbers from
/// RFC 5766's 0x4000-0x7FFF, so some of its messages use numbers RFC 8656 §12 reserves
/// (<see cref="CoturnClientReservedChannel"/>).
/// </remarks>
internal static class ChannelDataVectors
{
    /// <summary>Channel 0x4000, Length 0: "Note that 0 is a valid length" (RFC 8656 §12.4). No padding needed.</summary>
    public static readonly ChannelDataVector Empty4000 = new("0x4000 empty", TestVectors.Hex("40 00 00 00"), 0x4000, []);

    /// <summary>Channel 0x4001, "hello": 4 + 5 = 9 bytes, padded to 12 over TCP (RFC 8656 §12.5).</summary>
    public static readonly ChannelDataVector Hello4001 = new(
        "0x4001 5 bytes padded",
        TestVectors.Hex("40 01 00 05 68 65 6c 6c 6f 00 00 00"),
        0x4001,
        "hello"u8.ToArray());

    /// <summary>Channel 0x4ABC, 3 bytes and one padding byte that is not zero: receivers ignore its value.</summary>
    public static readonly ChannelDataVector OddPadding4ABC = new(
        "0x4ABC 3 bytes, nonzero padding",
        TestVectors.Hex("4a bc 00 03 01 02 03 ff"),
        0x4ABC,
        [0x01, 0x02, 0x03]);

    /// <summary>Channel 0x4002, 4 bytes: already a multiple of four, no padding.</summary>
    public static readonly ChannelDataVector Aligned4002 = new(
        "0x4002 4 bytes",
        TestVectors.Hex("40 02 00 04 de ad be ef"),
        0x4002,
        [0xde, 0xad, 0xbe, 0xef]);

    /// <summary>Channel 0x4FFF (the highest allowed, RFC 8656 §12), 1200 bytes: 1204 needs no padding.</summary>
    public static readonly ChannelDataVector Large4FFF = MakeLarge();

    /// <summary>coturn 4.6.1 turnutils_uclient to turnserver over TCP: channel 0x4D42, 21 bytes, zero padding.</summary>
    public static readonly ChannelDataVector CoturnClient = new(
        "coturn 4.6.1 client, 0x4D42 21 bytes",
        TestVectors.Hex("4d 42 00 15 00 00 00 00 07 07 07 07 92 0a 00 00 00 00 00 00 07 07 07 07 07 00 00 00"),
        0x4D42,
        TestVectors.Hex("00 00 00 00 07 07 07 07 92 0a 00 00 00 00 00 00 07 07 07 07 07"));

    /// <summary>coturn 4.6.1 turnserver to turnutils_uclient over TCP: the same message relayed back, padded with stale bytes 07 07 07.</summary>
    public static readonly ChannelDataVector CoturnServer = new(
        "coturn 4.6.1 server, 0x4D42 21 bytes, stale padding",
        TestVectors.Hex("4d 42 00 15 00 00 00 00 07 07 07 07 92 0a 00 00 00 00 00 00 07 07 07 07 07 07 07 07"),
        0x4D42,
        TestVectors.Hex("00 00 00 00 07 07 07 07 92 0a 00 00 00 00 00 00 07 07 07 07 07"));

    /// <summary>
    /// coturn 4.6.1 turnutils_uclient over TCP on channel 0x719E, which its ChannelBind obtained from
    /// turnserver: valid under RFC 5766 (0x4000-0x7FFF), reserved under RFC 8656 §12 (0x5000-0xFFFF).
    /// </summary>
    public static readonly byte[] CoturnClientReservedChannel = TestVectors.Hex("71 9e 00 10 00 00 00 00 07 07 07 07 ae 04 00 00 00 00 00 00");

    /// <summary>Every valid vector, with a name for theory output.</summary>
    public static IEnumerable<ChannelDataVector> All()
    {
        yield return Empty4000;
        yield return Hello4001;
        yield return OddPadding4ABC;
        yield return Aligned4002;
        yield return Large4FFF;
        yield return CoturnClient;
        yield return CoturnServer;
    }

    /// <summary>xunit member data over <see cref="All"/>.</summary>
    public static TheoryData<string> Names()
    {
        var data = new TheoryData<string>();
        foreach (var vector in All())
        {
            data.Add(vector.Name);
        }

        return data;
    }

    public static ChannelDataVector ByName(string name) =>
        All().FirstOrDefault(v => v.Name == name) ?? throw new ArgumentException(name, nameof(name));

    private static ChannelDataVector MakeLarge()
    {
        var data = new byte[1200];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (byte)((i * 7) + 3);
        }

        var stream = new byte[4 + data.Length];
        BinaryPrimitives.WriteUInt16BigEndian(stream, 0x4FFF);
        BinaryPrimitives.WriteUInt16BigEndian(stream.AsSpan(2), 1200);
        data.CopyTo(stream, 4);
        Assert.Equal(TestVectors.Hex("4f ff 04 b0 03 0a 11 18"), stream[..8]);
        return new ChannelDataVector("0x4FFF 1200 bytes", stream, 0x4FFF, data);
    }
}
