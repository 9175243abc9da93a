namespace Relay.Protocol.Stun;

/// <summary>Bounds a reader enforces before it looks at a message body.</summary>
public readonly record struct StunReaderLimits
{
    /// <summary>Default limits: a message fits one unfragmented Ethernet datagram path MTU class.</summary>
    public static StunReaderLimits Default { get; } = new() { MaxMessageSize = 2048, MaxAttributes = 64 };

    /// <summary>Largest message accepted, header included. RFC 8489 §6.1 expects under 576 bytes over IPv4 unless the path MTU is known; TURN carries larger data.</summary>
    public int MaxMessageSize { get; init; }

    /// <summary>Most attributes walked in one message; bounds CPU per packet.</summary>
    public int MaxAttributes { get; init; }
}
