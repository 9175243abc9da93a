using System.Net;
using System.Net.Sockets;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Server.Tests.DeviceClientNat;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// Candidate gathering behind a network that drops UDP to the server: a silent UDP socket stands in for
/// the server's UDP port, our real server (in-process) answers on TCP.
/// </summary>
public sealed class PeerGatheringTests
{
    // Shorter than the UDP schedule below (≈ 39.5 s), so a gathering that waits it out fails the test.
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private static PeerOptions Options() => new()
    {
        LocalAddress = IPAddress.Loopback,
        UseHost = false,
        ServerRetransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(500), MaxRequests = 7, LastWaitMultiplier = 16 },
    };

    private static Socket Silent()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    private static PeerServers Servers(IPEndPoint udp, TurnServerUnderTest tcp) =>
        new(udp, udp, tcp.Endpoint, new TurnCredentials(TurnServerUnderTest.User, TurnServerUnderTest.Password));

    [Fact]
    public async Task SilentUdp_TcpRelayWins_AndTheReflexiveRequestIsAbandoned()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        using var silent = Silent();

        await using var local = await PeerCandidates.GatherAsync(Options(), Servers((IPEndPoint)silent.LocalEndPoint!, server), null, TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.NotNull(local.Turn);
        Assert.Equal(TurnTransport.Tcp, local.Turn.Transport);
        Assert.Equal(["relay"], local.Candidates.Select(c => c.Type));
        Assert.True(silent.Available > 0, "UDP was tried first");
    }

    [Fact]
    public async Task KnownUdpBlocked_SendsNoUdpToTheServer()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        using var silent = Silent();

        await using var local = await PeerCandidates.GatherAsync(Options(), Servers((IPEndPoint)silent.LocalEndPoint!, server), nameof(NatType.UdpBlocked), TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(TurnTransport.Tcp, local.Turn!.Transport);
        Assert.Equal(["relay"], local.Candidates.Select(c => c.Type));
        Assert.Equal(0, silent.Available);
    }

    [Fact]
    public async Task AnsweringUdp_GathersReflexiveAndUdpRelay()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);

        await using var local = await PeerCandidates.GatherAsync(Options(), Servers(server.Endpoint, server), null, TimeProvider.System, CancellationToken.None).WaitAsync(Bound);

        Assert.Equal(TurnTransport.Udp, local.Turn!.Transport);
        Assert.Equal(["srflx", "relay"], local.Candidates.Select(c => c.Type));
        Assert.Equal(((IPEndPoint)local.Socket.LocalEndPoint!).Port, local.Candidates[0].Port);
    }
}
