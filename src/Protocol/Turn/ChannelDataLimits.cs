namespace Relay.Protocol.Turn;

/// <summary>Bounds <see cref="ChannelDataReader"/> enforces as soon as the 4-byte header is in.</summary>
/// <remarks>
/// <c>default(ChannelDataLimits)</c> has a <see cref="MaxDataLength"/> of 0 and so accepts only empty
/// messages; start from <see cref="Default"/>.
/// </remarks>
public readonly record struct ChannelDataLimits
{
    /// <summary>Accepts every length the 16-bit Length field can declare (65,535 bytes of application data).</summary>
    public static ChannelDataLimits Default { get; } = new() { MaxDataLength = ushort.MaxValue };

    /// <summary>
    /// Largest application-data length accepted: the Length field, which excludes the 4-byte header and
    /// any padding (RFC 8656 §12.4). A larger declared length is <see cref="ChannelDataError.TooLarge"/>
    /// before any of the body is awaited.
    /// </summary>
    public int MaxDataLength { get; init; }

    /// <summary>
    /// Also accept channels 0x5000-0x7FFF, the upper half of RFC 5766's range that RFC 8656 §12 reserved.
    /// Deployed clients still bind them (coturn 4.6.1's turnutils_uclient, old libjingle), and a relay
    /// that refuses them breaks those calls; 0x8000 and up never start with the bits 01 anyway.
    /// </summary>
    public bool AcceptRfc5766Channels { get; init; }
}
