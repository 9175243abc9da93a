using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Stun;

namespace Relay.Server.Tests.DeviceClientNat;

/// <summary>
/// DeviceClient's TURN client against real servers, ours and coturn's turnserver, over UDP and TCP, with a
/// plain UDP socket on 127.0.0.1 as the peer. Every wait is for a datagram or a counter, bounded.
/// </summary>
public sealed class TurnClientTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    public static TheoryData<TurnServerKind, TurnTransport> ServersAndTransports() => new()
    {
        { TurnServerKind.Ours, TurnTransport.Udp },
        { TurnServerKind.Ours, TurnTransport.Tcp },
        { TurnServerKind.Coturn, TurnTransport.Udp },
        { TurnServerKind.Coturn, TurnTransport.Tcp },
    };

    internal static TurnClientOptions Options(TimeProvider? clock = null) => new()
    {
        Retransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 5, LastWaitMultiplier = 16 },
        TimeProvider = clock ?? TimeProvider.System,
    };

    private static TurnCredentials Credentials => new(TurnServerUnderTest.User, TurnServerUnderTest.Password);

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task Allocate_ReportsTheRelayedAndTheServerReflexiveAddress(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);
        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, Credentials with { Realm = TurnServerUnderTest.Realm }, Options());

        Assert.Equal(IPAddress.Loopback, client.RelayedAddress.Address);
        Assert.NotEqual(0, client.RelayedAddress.Port);
        Assert.Equal(client.LocalEndPoint, client.MappedAddress);
        Assert.True(client.Lifetime > TimeSpan.Zero);

        // Ours offers PASSWORD-ALGORITHMS with SHA-256 first (RFC 8489 §9.2.4); coturn 4.6.1 offers none, so MD5.
        Assert.Equal(kind == TurnServerKind.Ours ? StunPasswordAlgorithm.Sha256 : StunPasswordAlgorithm.Md5, client.PasswordAlgorithm);
    }

    [Theory]
    [InlineData(TurnTransport.Udp)]
    [InlineData(TurnTransport.Tcp)]
    public async Task StaleNonce_Gets438_AndTheClientRetriesWithTheFreshOne(TurnTransport transport)
    {
        // Our server's nonce expires on its DI clock, which this test moves; coturn's runs on wall time only.
        var serverClock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await RelayTestServer.StartAsync(
            services => services.AddSingleton<TimeProvider>(serverClock),
            $"Relay:Turn:Users:0={TurnServerUnderTest.User}:{TurnServerUnderTest.Password}", "Relay:Turn:NonceLifetimeSeconds=60");
        var options = Options();
        options.RequestedLifetime = TimeSpan.FromSeconds(3600);
        await using var client = await TurnClient.AllocateAsync(new IPEndPoint(IPAddress.Loopback, server.StunPort), transport, Credentials, options);

        var metrics = server.Services.GetRequiredService<Relay.Server.Turn.TurnMetrics>();
        Assert.Equal(0, metrics.Responses(438));

        serverClock.Advance(TimeSpan.FromSeconds(61));

        Assert.Equal(TimeSpan.FromSeconds(3600), await client.RefreshAsync());
        Assert.Equal(1, metrics.Responses(438));
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task Permission_SendIndicationPath_BothDirections(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);
        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, Credentials, Options());
        using var peer = PeerSocket();
        var peerEndPoint = (IPEndPoint)peer.LocalEndPoint!;

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await client.SendAsync(peerEndPoint, new byte[] { 1 }));
        await client.CreatePermissionAsync(peerEndPoint);

        await client.SendAsync(peerEndPoint, "hello peer"u8.ToArray());
        var (data, from) = await ReceiveAsync(peer);
        Assert.Equal("hello peer"u8.ToArray(), data);
        Assert.Equal(client.RelayedAddress, from);

        await peer.SendToAsync("hello client"u8.ToArray(), SocketFlags.None, client.RelayedAddress);
        var received = await client.ReceiveAsync().AsTask().WaitAsync(Bound);
        Assert.Equal(peerEndPoint, received.Peer);
        Assert.Equal("hello client"u8.ToArray(), received.Data.ToArray());
        Assert.False(received.ViaChannel);
        Assert.Equal(1, client.ReceivedViaIndication);
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task ChannelPath_BothDirections_WithPaddingOverTcp(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);
        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, Credentials, Options());
        using var peer = PeerSocket();
        var peerEndPoint = (IPEndPoint)peer.LocalEndPoint!;

        var channel = await client.BindChannelAsync(peerEndPoint);
        Assert.InRange(channel, (ushort)0x4000, (ushort)0x4FFF);
        Assert.Equal(channel, await client.BindChannelAsync(peerEndPoint));

        // Odd lengths make the stream framing pad (RFC 8656 §12.5); several in a row prove it realigns.
        foreach (var length in new[] { 5, 1, 0, 1200, 3 })
        {
            var payload = Enumerable.Range(0, length).Select(static i => (byte)(i * 7)).ToArray();
            await client.SendAsync(peerEndPoint, payload);
            var (data, from) = await ReceiveAsync(peer);
            Assert.Equal(payload, data);
            Assert.Equal(client.RelayedAddress, from);

            await peer.SendToAsync(payload, SocketFlags.None, client.RelayedAddress);
            var received = await client.ReceiveAsync().AsTask().WaitAsync(Bound);
            Assert.Equal(peerEndPoint, received.Peer);
            Assert.Equal(payload, received.Data.ToArray());
            Assert.True(received.ViaChannel, "a bound peer's data arrives as ChannelData");
        }

        Assert.Equal(5, client.ReceivedViaChannel);
        Assert.Equal(0, client.ReceivedViaIndication);
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task Refresh_ExplicitAndAutomatic_KeepsAllocationPermissionAndChannel(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var options = Options(clock);
        options.RequestedLifetime = TimeSpan.FromSeconds(600);
        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, Credentials, options);
        using var peer = PeerSocket();
        var peerEndPoint = (IPEndPoint)peer.LocalEndPoint!;

        // RFC 8656 §7.2: a server grants at least its default (600 s) and at most its maximum (3600 s for both).
        Assert.Equal(TimeSpan.FromSeconds(1200), await client.RefreshAsync(TimeSpan.FromSeconds(1200)));
        Assert.Equal(TimeSpan.FromSeconds(600), await client.RefreshAsync());

        await client.CreatePermissionAsync(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 4000));
        await client.BindChannelAsync(peerEndPoint);

        // 250 s on: the permission (300 s) is within the 60 s margin, the channel (600 s) and allocation are not.
        clock.Advance(TimeSpan.FromSeconds(250));
        await Poll.UntilAsync(() => client.PermissionRefreshes == 1 || client.LastMaintenanceError is not null, "the permission refresh");
        Assert.Null(client.LastMaintenanceError);
        Assert.Equal(0, client.AllocationRefreshes);
        Assert.Equal(0, client.ChannelRefreshes);

        // 550 s: allocation and channel are due.
        clock.Advance(TimeSpan.FromSeconds(300));
        await Poll.UntilAsync(() => (client.AllocationRefreshes == 1 && client.ChannelRefreshes == 1) || client.LastMaintenanceError is not null, "the allocation and channel refresh");
        Assert.Null(client.LastMaintenanceError);
        Assert.Equal(clock.GetUtcNow() + TimeSpan.FromSeconds(600), client.ExpiresAt);

        // Still relaying over the renewed channel.
        await client.SendAsync(peerEndPoint, "still here"u8.ToArray());
        Assert.Equal("still here"u8.ToArray(), (await ReceiveAsync(peer)).Data);
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task Deallocate_FreesTheAllocation_AndItsRelayPort(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);
        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, Credentials, Options());
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Assert.ThrowsAny<SocketException>(() => probe.Bind(client.RelayedAddress));

        await client.DeallocateAsync();

        // Both servers relay on 127.0.0.1: once the allocation is gone its relay socket is closed and the
        // port can be bound again (coturn deletes on its next one-second timer tick, so wait for it).
        await Poll.UntilAsync(() => TryBind(probe, client.RelayedAddress), "the relay port to be released");
        if (kind == TurnServerKind.Ours)
        {
            // RFC 8656 §8: a Refresh for an allocation that no longer exists: 437 Allocation Mismatch.
            var error = await Assert.ThrowsAsync<TurnErrorException>(() => client.RefreshAsync());
            Assert.Equal(437, error.Code);
        }
    }

    private static bool TryBind(Socket socket, IPEndPoint endpoint)
    {
        try
        {
            socket.Bind(endpoint);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task WrongPassword_Gets401(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);

        var error = await Assert.ThrowsAsync<TurnErrorException>(() => TurnClient.AllocateAsync(server.Endpoint, transport, Credentials with { Password = "wrong" }, Options()));
        Assert.Equal(401, error.Code);
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task UnexpectedRealm_IsRefusedBeforeSendingCredentials(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);

        await Assert.ThrowsAsync<TurnProtocolException>(() => TurnClient.AllocateAsync(server.Endpoint, transport, Credentials with { Realm = "elsewhere" }, Options()));
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task DeniedPeer_Gets403_ForPermissionAndChannel(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind);
        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, Credentials, Options());

        var permission = await Assert.ThrowsAsync<TurnErrorException>(() => client.CreatePermissionAsync(new IPEndPoint(TurnServerUnderTest.DeniedPeer, 4000)));
        Assert.Equal(403, permission.Code);
        var channel = await Assert.ThrowsAsync<TurnErrorException>(() => client.BindChannelAsync(new IPEndPoint(TurnServerUnderTest.DeniedPeer, 4000)));
        Assert.Equal(403, channel.Code);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await client.SendAsync(new IPEndPoint(TurnServerUnderTest.DeniedPeer, 4000), new byte[] { 1 }));
    }

    [Theory]
    [MemberData(nameof(ServersAndTransports))]
    public async Task TimeLimitedCredentials_FromTheSharedSecret_Allocate(TurnServerKind kind, TurnTransport transport)
    {
        await using var server = await TurnServerUnderTest.StartAsync(kind, restSecret: true);
        var credentials = TurnCredentials.CreateTimeLimited(TurnServerUnderTest.SharedSecret, "device-7", DateTimeOffset.UtcNow.AddHours(1));
        Assert.EndsWith(":device-7", credentials.Username, StringComparison.Ordinal);

        await using var client = await TurnClient.AllocateAsync(server.Endpoint, transport, credentials, Options());
        Assert.Equal(IPAddress.Loopback, client.RelayedAddress.Address);

        var wrong = TurnCredentials.CreateTimeLimited("not-the-secret", "device-7", DateTimeOffset.UtcNow.AddHours(1));
        var error = await Assert.ThrowsAsync<TurnErrorException>(() => TurnClient.AllocateAsync(server.Endpoint, transport, wrong, Options()));
        Assert.Equal(401, error.Code);
    }

    [Fact]
    public void TimeLimitedCredentials_MatchTheDraftsFormula()
    {
        // draft-uberti-behave-turn-rest-00 §2.2: password = base64(HMAC-SHA1(secret, "expiry:user")).
        var credentials = TurnCredentials.CreateTimeLimited("secret", "alice", DateTimeOffset.FromUnixTimeSeconds(1700000000));
        Assert.Equal("1700000000:alice", credentials.Username);
        Assert.Equal(Convert.ToBase64String(System.Security.Cryptography.HMACSHA1.HashData("secret"u8, "1700000000:alice"u8)), credentials.Password);
        Assert.Equal("1700000000", TurnCredentials.CreateTimeLimited("secret", string.Empty, DateTimeOffset.FromUnixTimeSeconds(1700000000)).Username);
    }

    internal static Socket PeerSocket()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    private static async Task<(byte[] Data, IPEndPoint From)> ReceiveAsync(Socket socket)
    {
        using var timeout = new CancellationTokenSource(Bound);
        var buffer = new byte[65536];
        var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
        return (buffer[..received.ReceivedBytes], (IPEndPoint)received.RemoteEndPoint);
    }
}
