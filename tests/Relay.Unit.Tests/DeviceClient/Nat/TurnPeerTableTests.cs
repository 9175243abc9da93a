using System.Net;
using Relay.DeviceClient.Nat;

namespace Relay.Server.Tests.DeviceClientNat;

/// <summary>The permissions and channel bindings a TURN client keeps (RFC 8656 §9, §12), without a server.</summary>
public sealed class TurnPeerTableTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.UnixEpoch;
    private static readonly IPEndPoint PeerA = new(IPAddress.Parse("192.0.2.1"), 5000);
    private static readonly IPEndPoint PeerB = new(IPAddress.Parse("192.0.2.2"), 6000);

    [Fact]
    public void Rfc8656_12_ChannelNumbers_Start_At_0x4000_StayWithTheirPeer_AndRunOutAfter4096()
    {
        var table = new TurnPeerTable();
        var a = table.ChannelNumberFor(PeerA);
        Assert.Equal(0x4000, a);
        table.Bound(a, PeerA, T0);
        Assert.Equal(a, table.ChannelNumberFor(PeerA));

        for (var expected = 0x4001; expected <= 0x4FFF; expected++)
        {
            Assert.Equal(expected, table.ChannelNumberFor(new IPEndPoint(IPAddress.Loopback, expected)));
        }

        Assert.Throws<InvalidOperationException>(() => table.ChannelNumberFor(PeerB));
        Assert.Equal(a, table.ChannelNumberFor(PeerA)); // a bound peer still gets its number
    }

    [Fact]
    public void Rfc8656_11_2_ABinding_AlsoPermitsThePeersAddress_AndRoutesBothWays()
    {
        var table = new TurnPeerTable();
        Assert.Null(table.Route(PeerA, out var permitted));
        Assert.False(permitted);

        table.Bound(0x4000, PeerA, T0);

        var binding = table.Route(PeerA, out permitted);
        Assert.True(permitted);
        Assert.Equal(0x4000, binding!.Number);
        Assert.Equal(PeerA, table.Channel(0x4000)!.Peer);
        Assert.Null(table.Channel(0x4001));

        // §9: a permission is per address; another port of that address is permitted but not bound.
        Assert.Null(table.Route(new IPEndPoint(PeerA.Address, 9999), out permitted));
        Assert.True(permitted);
    }

    [Fact]
    public void Rfc8656_9_12_ExpiringBy_RenewsEachThingOnce_ThePermissionOfABoundPeerWithItsChannel()
    {
        var table = new TurnPeerTable();
        table.Bound(0x4000, PeerA, T0);   // channel 600 s, permission 300 s
        table.Permitted([PeerB], T0);     // permission 300 s

        var (permissions, channels) = table.ExpiringBy(T0 + TimeSpan.FromSeconds(299));
        Assert.Empty(permissions);
        Assert.Empty(channels);

        // At 300 s both permissions are due, A's too: its channel, which would renew it, is due only at 600 s.
        (permissions, channels) = table.ExpiringBy(T0 + TimeSpan.FromSeconds(300));
        Assert.Empty(channels);
        Assert.Equal([PeerA.Address, PeerB.Address], permissions.Select(static p => p.Address).OrderBy(static a => a.ToString()));

        // At 600 s A's channel is due, and its ChannelBind renews A's permission: only B's goes on its own.
        (permissions, channels) = table.ExpiringBy(T0 + TimeSpan.FromSeconds(600));
        Assert.Equal(PeerA, Assert.Single(channels).Peer);
        Assert.Equal(PeerB.Address, Assert.Single(permissions).Address);

        // Renewed: nothing is due until the next deadline.
        table.Bound(0x4000, PeerA, T0 + TimeSpan.FromSeconds(600));
        table.Permitted([PeerB], T0 + TimeSpan.FromSeconds(600));
        (permissions, channels) = table.ExpiringBy(T0 + TimeSpan.FromSeconds(899));
        Assert.Empty(permissions);
        Assert.Empty(channels);
    }
}
