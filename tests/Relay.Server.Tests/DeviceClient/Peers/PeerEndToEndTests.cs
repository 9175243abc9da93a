using System.Net;
using System.Text;
using Relay.DeviceClient;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Rendezvous;
using Relay.Server.Tests.Push.Commands;
using Relay.Server.Tests.RendezvousServer;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// Rendezvous end to end on loopback: two real <see cref="RelayDeviceClient"/>s, the real server in-process
/// (MQTT signalling, STUN, TURN with credentials minted from the generated secret), nothing scripted.
/// d1 and d2 share a tag; d3 shares none (the default SameTag policy refuses it).
/// </summary>
public sealed class PeerEndToEndTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static async Task<RendezvousTestKit> StartServerAsync()
    {
        // An RFC 5780 alternate address, so the devices classify their NAT (loopback: Open) rather than Unknown.
        var kit = await RendezvousTestKit.StartAsync(
            "Relay:Turn:AllowLoopbackPeers=true", "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        await kit.TagAsync("d1", "owner:alice");
        await kit.TagAsync("d2", "owner:alice");
        await kit.TagAsync("d3", "owner:bob");
        return kit;
    }

    private static RelayDeviceClient Client(RendezvousTestKit kit, string device, Action<PeerOptions>? configure = null)
    {
        var options = new DeviceClientOptions
        {
            Server = new Uri($"mqtt://127.0.0.1:{kit.Server.MqttPort}"),
            DeviceId = device,
            Secret = PushTestKit.Secret,
        };
        options.Peers.LocalAddress = IPAddress.Loopback;
        options.Peers.AllowLoopbackCandidates = true;
        options.Peers.InitialRetransmitTimeout = TimeSpan.FromMilliseconds(100);
        options.Peers.ServerRetransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 5 };
        configure?.Invoke(options.Peers);
        return new RelayDeviceClient(options);
    }

    private static async Task<RelayDeviceClient> StartClientAsync(RendezvousTestKit kit, string device, Action<PeerOptions>? configure = null)
    {
        var client = Client(kit, device, configure);
        await client.StartAsync();
        await client.WaitConnectedAsync().WaitAsync(Bound);
        return client;
    }

    /// <summary>The next channel d2 is handed by <see cref="RelayDeviceClient.PeerConnected"/>.</summary>
    private static Task<PeerChannel> NextIncoming(RelayDeviceClient client)
    {
        var incoming = new TaskCompletionSource<PeerChannel>(TaskCreationOptions.RunContinuationsAsynchronously);
        client.PeerConnected += (_, e) =>
        {
            if (!incoming.TrySetResult(e.Channel))
            {
                _ = e.Channel.DisposeAsync().AsTask();
            }
        };
        return incoming.Task.WaitAsync(Bound);
    }

    private static ReadOnlyMemory<byte> Text(string text) => Encoding.UTF8.GetBytes(text);

    /// <summary>Polls /metrics until <paramref name="sample"/> equals <paramref name="expected"/> (the result report is asynchronous), bounded; fails with the rendezvous samples.</summary>
    private static Task AssertMetricAsync(RendezvousTestKit kit, string sample, double expected) =>
        Poll.UntilAsync(
            async () => await kit.MetricAsync(sample) == expected,
            $"{sample} == {expected}",
            Bound,
            TimeSpan.FromMilliseconds(50),
            async () => string.Join('\n', (await kit.MetricsAsync()).Split('\n').Where(static l => l.StartsWith("relay_rendezvous_", StringComparison.Ordinal))));

    [Fact]
    public async Task ConnectPeer_RelayFirst_BothWays_ThenDirect_AndTheServerCountsTheResultByNatPair()
    {
        await using var kit = await StartServerAsync();
        await using var d2 = await StartClientAsync(kit, "d2");
        var incoming = NextIncoming(d2);
        await using var d1 = await StartClientAsync(kit, "d1");

        await using var channel1 = await d1.ConnectPeerAsync("d2").WaitAsync(Bound);
        await using var channel2 = await incoming;
        Assert.Equal("d2", channel1.PeerId);
        Assert.Equal("d1", channel2.PeerId);
        var direct1 = channel1.WaitForPathAsync(PeerPath.Direct, Bound);
        var direct2 = channel2.WaitForPathAsync(PeerPath.Direct, Bound);

        // Relay first: both channels work at once; SendAsync returns only once the peer acknowledged (QoS 1).
        await channel1.SendAsync(Text("d1 -> d2")).WaitAsync(Bound);
        Assert.Equal("d1 -> d2", await channel2.ReceiveTextAsync(Bound));
        await channel2.SendAsync(Text("d2 -> d1")).WaitAsync(Bound);
        Assert.Equal("d2 -> d1", await channel1.ReceiveTextAsync(Bound));

        // Both on 127.0.0.1: the checks succeed and both sides switch to the direct path (PathChanged).
        await Task.WhenAll(direct1, direct2);
        Assert.Equal(PeerPath.Direct, channel1.Path);
        Assert.Equal(PeerPath.Direct, channel2.Path);
        await channel1.SendAsync(Text("direct 1")).WaitAsync(Bound);
        Assert.Equal("direct 1", await channel2.ReceiveTextAsync(Bound));
        await channel2.SendAsync(Text("direct 2")).WaitAsync(Bound);
        Assert.Equal("direct 2", await channel1.ReceiveTextAsync(Bound));
        Assert.NotNull(channel1.RoundTripTime);

        // Both sides classified their NAT (loopback: Open) before connecting, so the pair is known.
        await AssertMetricAsync(kit, "relay_rendezvous_results_total{pair=\"Open/Open\",path=\"direct\"}", 1);
        await AssertMetricAsync(kit, "relay_rendezvous_attempts_total{pair=\"Open/Open\"}", 1);
        await AssertMetricAsync(kit, "relay_rendezvous_introductions_total{outcome=\"answered\"}", 1);
    }

    [Fact]
    public async Task RelayOnly_StaysRelayed_AndStillDelivers_BothWays()
    {
        await using var kit = await StartServerAsync();
        await using var d2 = await StartClientAsync(kit, "d2", static p => p.PathPolicy = PeerPathPolicy.RelayOnly);
        var incoming = NextIncoming(d2);
        await using var d1 = await StartClientAsync(kit, "d1", static p =>
        {
            p.PathPolicy = PeerPathPolicy.RelayOnly;
            p.CheckTimeout = TimeSpan.FromMilliseconds(500);
        });

        await using var channel1 = await d1.ConnectPeerAsync("d2").WaitAsync(Bound);
        await using var channel2 = await incoming;
        var changes = 0;
        channel1.PathChanged += (_, _) => Interlocked.Increment(ref changes);
        channel2.PathChanged += (_, _) => Interlocked.Increment(ref changes);
        for (var i = 0; i < 3; i++)
        {
            await channel1.SendAsync(Text($"a{i}")).WaitAsync(Bound);
            Assert.Equal($"a{i}", await channel2.ReceiveTextAsync(Bound));
            await channel2.SendAsync(Text($"b{i}")).WaitAsync(Bound);
            Assert.Equal($"b{i}", await channel1.ReceiveTextAsync(Bound));
        }

        // d1's checks end after CheckTimeout and it reports "relayed": by then a direct path would have shown.
        await AssertMetricAsync(kit, "relay_rendezvous_results_total{pair=\"Open/Open\",path=\"relayed\"}", 1);
        Assert.Equal(PeerPath.Relayed, channel1.Path);
        Assert.Equal(PeerPath.Relayed, channel2.Path);
        Assert.Equal(0, Volatile.Read(ref changes));
        await AssertMetricAsync(kit, "relay_rendezvous_fallbacks_total", 1);
    }

    [Fact]
    public async Task ConnectPeer_WithoutASharedTag_IsForbidden()
    {
        await using var kit = await StartServerAsync();
        await using var d3 = await StartClientAsync(kit, "d3");
        var offered = false;
        d3.PeerConnected += (_, _) => offered = true;
        await using var d1 = await StartClientAsync(kit, "d1");

        var refused = await Assert.ThrowsAsync<PeerConnectException>(() => d1.ConnectPeerAsync("d3").WaitAsync(Bound));
        Assert.Equal(RendezvousErrorCodes.Forbidden, refused.Code);

        // Forbidden says nothing about existence: the same answer for a device that does not exist.
        var unknown = await Assert.ThrowsAsync<PeerConnectException>(() => d1.ConnectPeerAsync("nobody").WaitAsync(Bound));
        Assert.Equal(RendezvousErrorCodes.Forbidden, unknown.Code);
        Assert.False(offered);
        await AssertMetricAsync(kit, "relay_rendezvous_errors_total{code=\"forbidden\"}", 2);
    }

    [Fact]
    public async Task ConnectPeer_ToAnOfflinePeer_IsOffline()
    {
        await using var kit = await StartServerAsync();
        await using var d1 = await StartClientAsync(kit, "d1");

        var refused = await Assert.ThrowsAsync<PeerConnectException>(() => d1.ConnectPeerAsync("d2").WaitAsync(Bound));
        Assert.Equal(RendezvousErrorCodes.Offline, refused.Code);
        await AssertMetricAsync(kit, "relay_rendezvous_introductions_total{outcome=\"offline\"}", 1);
    }
}
