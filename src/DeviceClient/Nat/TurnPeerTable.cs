using System.Net;
using Relay.Protocol.Turn;

namespace Relay.DeviceClient.Nat;

/// <summary>A channel bound to a peer (RFC 8656 §12) and when it expires unless bound again.</summary>
internal sealed record TurnChannelBinding(ushort Number, IPEndPoint Peer, DateTimeOffset ExpiresAt);

/// <summary>
/// What a <see cref="TurnClient"/> installed on its allocation: permissions by peer address (RFC 8656 §9) and
/// channel bindings (§12), each with its expiry, so maintenance renews them in time and the data path knows
/// how to reach a peer. Channel numbers are handed out once per allocation, so one never names two peers.
/// </summary>
internal sealed class TurnPeerTable
{
    // RFC 8656 §9: a permission lives 300 s and "the client SHOULD refresh" it before; §12: a channel binding 600 s.
    private static readonly TimeSpan PermissionLifetime = TimeSpan.FromSeconds(300);
    private static readonly TimeSpan ChannelLifetime = TimeSpan.FromSeconds(600);

    private readonly object _gate = new();
    private readonly Dictionary<IPAddress, PermissionEntry> _permissions = [];
    private readonly Dictionary<IPEndPoint, TurnChannelBinding> _channelsByPeer = [];
    private readonly Dictionary<ushort, TurnChannelBinding> _channelsByNumber = [];
    private ushort _nextChannel = TurnChannel.MinNumber;

    /// <summary>The channel bound to <paramref name="peer"/>, or a number never used before.</summary>
    /// <exception cref="InvalidOperationException">All 4096 numbers were handed out.</exception>
    public ushort ChannelNumberFor(IPEndPoint peer)
    {
        lock (_gate)
        {
            if (_channelsByPeer.TryGetValue(peer, out var existing))
            {
                return existing.Number;
            }

            if (_nextChannel > TurnChannel.MaxNumber)
            {
                throw new InvalidOperationException("All 4096 channel numbers are in use.");
            }

            return _nextChannel++;
        }
    }

    /// <summary>A CreatePermission for <paramref name="peers"/> succeeded at <paramref name="now"/>.</summary>
    public void Permitted(IEnumerable<IPEndPoint> peers, DateTimeOffset now)
    {
        lock (_gate)
        {
            foreach (var peer in peers)
            {
                _permissions[peer.Address] = new PermissionEntry(peer, now + PermissionLifetime);
            }
        }
    }

    /// <summary>
    /// A ChannelBind succeeded at <paramref name="now"/>; RFC 8656 §11.2: it also installs or refreshes the
    /// permission for the peer's address.
    /// </summary>
    public void Bound(ushort number, IPEndPoint peer, DateTimeOffset now)
    {
        lock (_gate)
        {
            var binding = new TurnChannelBinding(number, peer, now + ChannelLifetime);
            _channelsByPeer[peer] = binding;
            _channelsByNumber[number] = binding;
            _permissions[peer.Address] = new PermissionEntry(peer, now + PermissionLifetime);
        }
    }

    /// <summary>How to reach <paramref name="peer"/>: its channel, if bound, and whether its address has a permission.</summary>
    public TurnChannelBinding? Route(IPEndPoint peer, out bool permitted)
    {
        lock (_gate)
        {
            permitted = _permissions.ContainsKey(peer.Address);
            return _channelsByPeer.GetValueOrDefault(peer);
        }
    }

    /// <summary>The binding of channel <paramref name="number"/>; null for a number this client never bound.</summary>
    public TurnChannelBinding? Channel(ushort number)
    {
        lock (_gate)
        {
            return _channelsByNumber.GetValueOrDefault(number);
        }
    }

    /// <summary>
    /// What expires by <paramref name="soon"/>: channels to bind again, and permissions to renew for addresses
    /// that no expiring channel renews anyway.
    /// </summary>
    public (IPEndPoint[] Permissions, TurnChannelBinding[] Channels) ExpiringBy(DateTimeOffset soon)
    {
        lock (_gate)
        {
            TurnChannelBinding[] channels = [.. _channelsByPeer.Values.Where(c => c.ExpiresAt <= soon)];
            IPEndPoint[] permissions = [.. _permissions.Values.Where(p => p.ExpiresAt <= soon && !channels.Any(c => c.Peer.Address.Equals(p.Peer.Address))).Select(static p => p.Peer)];
            return (permissions, channels);
        }
    }

    private sealed record PermissionEntry(IPEndPoint Peer, DateTimeOffset ExpiresAt);
}
