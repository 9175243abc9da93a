using System.Buffers.Binary;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>The lifetimes RFC 8656 fixes, and the one it lets the server choose within bounds.</summary>
internal static class TurnLifetimes
{
    /// <summary>RFC 8656 §9: a permission lives 300 s unless refreshed.</summary>
    public const int PermissionSeconds = 300;

    /// <summary>RFC 8656 §12: a channel binding lives 600 s unless refreshed.</summary>
    public const int ChannelSeconds = 600;

    /// <summary>RFC 8656 §7.2 and §8.2: at least the default, at most the configured maximum.</summary>
    public static int Granted(in StunMessage request, TurnOptions options)
    {
        var lifetime = options.DefaultLifetimeSeconds;
        if (request.TryGetAttribute(StunAttributeType.Lifetime, out var value))
        {
            lifetime = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(value), (uint)options.MaxLifetimeSeconds);
            lifetime = Math.Max(lifetime, options.DefaultLifetimeSeconds);
        }

        return lifetime;
    }
}
