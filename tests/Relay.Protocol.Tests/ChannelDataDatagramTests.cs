using Relay.Protocol.Turn;

namespace Relay.Protocol.Tests;

/// <summary>
/// ChannelData in UDP datagrams. RFC 8656 §12.5: over UDP "the padding is not required but MAY be included";
/// RFC 8656 §12.6: a datagram "too short to contain the claimed length of the ChannelData message" is
/// silently discarded. So the reader takes exactly Length bytes, ignores what follows, and rejects what
/// falls short.
/// </summary>
public sealed class ChannelDataDatagramTests
{
    private static readonly ChannelDataLimits Limits = ChannelDataLimits.Default;

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void ExactDatagram_WithoutPadding_IsRead(string name)
    {
        var vector = ChannelDataVectors.ByName(name);
        var datagram = vector.Unpadded;
        Assert.True(ChannelDataReader.TryRead(datagram, Limits, out var channel, out var data, out var error));
        Assert.Equal(ChannelDataError.None, error);
        Assert.Equal(vector.Channel, channel);
        Assert.Equal(vector.Data, data.ToArray());

        // A view of the datagram right after the header, not a copy.
        Assert.True(vector.Data.Length == 0 || (datagram.AsSpan().Overlaps(data, out var offset) && offset == 4));
    }

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void PaddedDatagram_IsRead_AndThePaddingIgnored(string name)
    {
        // RFC 8656 §12.5: over UDP the padding MAY be included.
        var vector = ChannelDataVectors.ByName(name);
        Assert.True(ChannelDataReader.TryRead(vector.Stream, Limits, out var channel, out var data, out _));
        Assert.Equal(vector.Channel, channel);
        Assert.Equal(vector.Data, data.ToArray());
    }

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void DatagramWithExtraTrailingBytes_IsRead_AndTheExtraIgnored(string name)
    {
        var vector = ChannelDataVectors.ByName(name);
        foreach (var extra in new[] { 1, 3, 4, 5, 100 })
        {
            var datagram = vector.Unpadded.Concat(Enumerable.Repeat((byte)0xEE, extra)).ToArray();
            Assert.True(ChannelDataReader.TryRead(datagram, Limits, out var channel, out var data, out var error));
            Assert.Equal(ChannelDataError.None, error);
            Assert.Equal(vector.Channel, channel);
            Assert.Equal(vector.Data, data.ToArray());
        }
    }

    [Theory]
    [MemberData(nameof(ChannelDataVectors.Names), MemberType = typeof(ChannelDataVectors))]
    public void TruncatedDatagram_IsLengthMismatch(string name)
    {
        // RFC 8656 §12.6: too short to contain the claimed length: silently discarded.
        var vector = ChannelDataVectors.ByName(name);
        var unpadded = vector.Unpadded;
        for (var length = 0; length < unpadded.Length; length++)
        {
            var datagram = unpadded.AsSpan(0, length).ToArray();
            Assert.False(ChannelDataReader.TryRead(datagram, Limits, out var channel, out var data, out var error));
            Assert.Equal(ChannelDataError.LengthMismatch, error);
            Assert.True(data.IsEmpty);
            Assert.Equal(length >= 4 ? vector.Channel : 0, channel);
        }
    }

    [Fact]
    public void ZeroToThreeByteDatagrams_AreLengthMismatch_UnlessTheFirstByteSaysOtherwise()
    {
        Assert.False(ChannelDataReader.TryRead([], Limits, out _, out _, out var error));
        Assert.Equal(ChannelDataError.LengthMismatch, error);

        for (var length = 1; length <= 3; length++)
        {
            var datagram = new byte[length];
            datagram[0] = 0x40;
            Assert.False(ChannelDataReader.TryRead(datagram, Limits, out _, out _, out error));
            Assert.Equal(ChannelDataError.LengthMismatch, error);

            datagram[0] = 0x00; // STUN
            Assert.False(ChannelDataReader.TryRead(datagram, Limits, out _, out _, out error));
            Assert.Equal(ChannelDataError.NotChannelData, error);

            datagram[0] = 0x50; // reserved 0x5000-0x50FF
            Assert.False(ChannelDataReader.TryRead(datagram, Limits, out _, out _, out error));
            Assert.Equal(ChannelDataError.ReservedChannel, error);
        }
    }

    [Fact]
    public void NotChannelData_ReservedChannel_AndTooLarge_AreReportedBeforeLength()
    {
        // The same order as the stream framer, so both transports call the same bytes the same thing.
        Assert.False(ChannelDataReader.TryRead(TestVectors.Rfc5769Request, Limits, out _, out _, out var error));
        Assert.Equal(ChannelDataError.NotChannelData, error);

        Assert.False(ChannelDataReader.TryRead(ChannelDataVectors.CoturnClientReservedChannel, Limits, out var channel, out _, out error));
        Assert.Equal(ChannelDataError.ReservedChannel, error);
        Assert.Equal(0x719E, channel);

        // Declared 65,535 in a 4-byte datagram: too large beats too short.
        Assert.False(ChannelDataReader.TryRead(TestVectors.Hex("40 00 ff ff"), new ChannelDataLimits { MaxDataLength = 1200 }, out _, out _, out error));
        Assert.Equal(ChannelDataError.TooLarge, error);
        Assert.False(ChannelDataReader.TryRead(TestVectors.Hex("40 00 ff ff"), Limits, out _, out _, out error));
        Assert.Equal(ChannelDataError.LengthMismatch, error);

        // A datagram that holds the whole oversized message is still too large.
        var big = new byte[4 + 1201];
        big[0] = 0x40;
        big[2] = 0x04;
        big[3] = 0xB1;
        Assert.False(ChannelDataReader.TryRead(big, new ChannelDataLimits { MaxDataLength = 1200 }, out _, out _, out error));
        Assert.Equal(ChannelDataError.TooLarge, error);
        Assert.True(ChannelDataReader.TryRead(big, new ChannelDataLimits { MaxDataLength = 1201 }, out _, out var data, out _));
        Assert.Equal(1201, data.Length);
    }

    [Fact]
    public void EveryFirstByte_IsClassifiedAsTheRfcTableSays()
    {
        // RFC 8656 §12 Table 3 (RFC 7983 §7): 64-79 TURN channel; 80-127 share the 01 bits but are
        // reserved channel numbers (0x5000-0x7FFF); everything else is another protocol.
        for (var first = 0; first < 256; first++)
        {
            var datagram = new byte[] { (byte)first, 0x00, 0x00, 0x00 };
            var ok = ChannelDataReader.TryRead(datagram, Limits, out _, out _, out var error);
            var expected = first switch
            {
                >= 64 and <= 79 => ChannelDataError.None,
                >= 80 and <= 127 => ChannelDataError.ReservedChannel,
                _ => ChannelDataError.NotChannelData,
            };
            Assert.Equal(expected, error);
            Assert.Equal(expected == ChannelDataError.None, ok);
            Assert.Equal(first is >= 64 and <= 127, TurnChannel.LooksLikeChannelData((byte)first));
        }
    }
}
