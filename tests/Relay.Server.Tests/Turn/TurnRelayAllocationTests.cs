using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// The allocation budget of the relay's data paths: 0 bytes per relayed packet, both directions,
/// ChannelData and Send/Data indications. The paths are driven on the test thread against a real
/// allocation, so GC.GetAllocatedBytesForCurrentThread sees exactly their cost.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed class TurnRelayAllocationTests
{
    private const ushort Channel = 0x4001;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RelayedPackets_AllocateNothing_InEitherDirection(bool stream)
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Turn:Users:0=alice:pw", "Relay:Turn:AllowLoopbackPeers=true", "Relay:Turn:MaxBytesPerSecondPerAllocation=0");
        await using var client = stream ? await TurnTestClient.TcpAsync(server, "alice", "pw") : TurnTestClient.Udp(server, "alice", "pw");
        using var channelPeer = Peer();
        using var indicationPeer = Peer();
        TurnTestClient.AssertSuccess(await client.AllocateAsync());
        await client.ChannelBindAsync(Channel, (IPEndPoint)channelPeer.LocalEndPoint!);
        await client.CreatePermissionAsync((IPEndPoint)indicationPeer.LocalEndPoint!);

        var relay = server.Services.GetRequiredService<TurnRelay>();
        var metrics = server.Services.GetRequiredService<TurnMetrics>();
        var allocation = relay.Find(client.FiveTuple)!;
        Assert.NotNull(allocation);
        var context = new TurnContext(allocation.FiveTuple.Client, allocation.FiveTuple.Server, allocation.FiveTuple.Transport, null, allocation.Sink as StreamClientSink);
        var payload = new byte[160];
        var slot = new byte[RelayIoLoop.Headroom + payload.Length + 4];
        var channelPeerAddress = StunAddress.FromEndPoint((IPEndPoint)channelPeer.LocalEndPoint!);
        var indicationPeerAddress = StunAddress.FromEndPoint((IPEndPoint)indicationPeer.LocalEndPoint!);

        void RelayBothWays()
        {
            // Client to peer: ChannelData (RFC 8656 §12.6); peer to client: ChannelData, then a Data
            // indication for the peer without a channel (RFC 8656 §11.3), written in front of the payload.
            relay.HandleChannelData(Channel, payload, context);
            relay.DataPath.OnPeerDatagram(allocation, slot, payload.Length, channelPeerAddress, Environment.TickCount64);
            relay.DataPath.OnPeerDatagram(allocation, slot, payload.Length, indicationPeerAddress, Environment.TickCount64);
        }

        for (var i = 0; i < 200; i++)
        {
            RelayBothWays();
        }

        var relayedBefore = metrics.RelayedPackets(toPeer: true) + metrics.RelayedPackets(toPeer: false)
            + metrics.Drops(TurnDropReason.SendFailed) + metrics.Drops(TurnDropReason.ClientBackpressure);
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 2_000; i++)
        {
            RelayBothWays();
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        if (stream)
        {
            // Our sink allocates nothing, but each flush wakes Kestrel's socket sender, and that machinery
            // allocates now and then on the flushing thread (0 B in most runs; once 21,280 B over 6,000
            // packets under heavy load). Any object allocated per packet is at least 24 bytes, so an
            // average under 16 bytes per packet still proves there is none.
            Assert.True(allocated < 16L * 3 * 2_000, $"{allocated} bytes allocated for {3 * 2_000} relayed packets");
        }
        else
        {
            Assert.Equal(0, allocated);
        }

        // Every call really went through a relay path: it was relayed, or shed by a full socket buffer
        // (the test does not read), and counted either way; nothing fell out as "no permission".
        var relayedAfter = metrics.RelayedPackets(toPeer: true) + metrics.RelayedPackets(toPeer: false)
            + metrics.Drops(TurnDropReason.SendFailed) + metrics.Drops(TurnDropReason.ClientBackpressure);
        Assert.Equal(3 * 2_000, relayedAfter - relayedBefore);
        Assert.Equal(0, metrics.Drops(TurnDropReason.NoPermission));
        Assert.Equal(0, metrics.Drops(TurnDropReason.NoChannel));
    }

    private static Socket Peer()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }
}
