using System.Net;
using System.Net.Sockets;
using Relay.DeviceClient.Nat;

namespace Relay.Server.Tests.DeviceClientNat;

/// <summary>RFC 5780 behaviour discovery against our server on loopback, where there is no NAT to find.</summary>
public sealed class NatBehaviorDiscoveryTests
{
    private static readonly StunClientOptions Fast = new() { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 4, LastWaitMultiplier = 4 };

    [Fact]
    public async Task OurRfc5780Server_OnLoopback_FindsEndpointIndependentMappingAndFiltering_Open()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var result = await NatBehaviorDiscovery.DiscoverAsync(socket, new IPEndPoint(IPAddress.Loopback, server.StunPort), Fast);

        Assert.Equal(NatMappingBehavior.EndpointIndependent, result.Mapping);
        Assert.Equal(NatFilteringBehavior.EndpointIndependent, result.Filtering);
        Assert.Equal(NatType.Open, result.Type);
        Assert.Equal(socket.LocalEndPoint, result.MappedAddress);
        Assert.False(result.IsBehindNat);
        Assert.True(result.SupportsHolePunching);
    }

    [Fact]
    public async Task EphemeralSocket_FindsTheLocalAddressItself()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");

        var result = await NatBehaviorDiscovery.DiscoverAsync(new IPEndPoint(IPAddress.Loopback, server.StunPort), Fast);

        Assert.Equal(NatType.Open, result.Type);
        Assert.Equal(result.LocalAddress, result.MappedAddress);
    }

    [Fact]
    public async Task ServerWithoutOtherAddress_IsUnsupported()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var result = await NatBehaviorDiscovery.DiscoverAsync(socket, new IPEndPoint(IPAddress.Loopback, server.StunPort), Fast);

        Assert.Equal(NatMappingBehavior.Unsupported, result.Mapping);
        Assert.Equal(NatFilteringBehavior.Unsupported, result.Filtering);
        Assert.Equal(NatType.Unknown, result.Type);
        Assert.Equal(socket.LocalEndPoint, result.MappedAddress);
    }

    [Fact]
    public async Task NoAnswer_IsUdpBlocked()
    {
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var options = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(10), MaxRequests = 2, LastWaitMultiplier = 2 };

        var result = await NatBehaviorDiscovery.DiscoverAsync((IPEndPoint)silent.LocalEndPoint!, options);

        Assert.Equal(NatType.UdpBlocked, result.Type);
        Assert.Equal(NatMappingBehavior.UdpBlocked, result.Mapping);
        Assert.Null(result.MappedAddress);
        Assert.True(silent.Available > 0, "the requests reached the silent endpoint");
    }

    [Theory]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.EndpointIndependent, true, NatType.FullCone)]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressDependent, true, NatType.AddressRestricted)]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressAndPortDependent, true, NatType.PortRestricted)]
    [InlineData(NatMappingBehavior.AddressDependent, NatFilteringBehavior.AddressAndPortDependent, true, NatType.Symmetric)]
    [InlineData(NatMappingBehavior.AddressAndPortDependent, NatFilteringBehavior.EndpointIndependent, true, NatType.Symmetric)]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.EndpointIndependent, false, NatType.Open)]
    [InlineData(NatMappingBehavior.EndpointIndependent, NatFilteringBehavior.AddressAndPortDependent, false, NatType.FirewalledOpen)]
    [InlineData(NatMappingBehavior.Unsupported, NatFilteringBehavior.EndpointIndependent, true, NatType.Unknown)]
    [InlineData(NatMappingBehavior.UdpBlocked, NatFilteringBehavior.UdpBlocked, true, NatType.UdpBlocked)]
    public void Summary_FollowsTheClassicNames(NatMappingBehavior mapping, NatFilteringBehavior filtering, bool behindNat, NatType expected) =>
        Assert.Equal(expected, NatBehaviorDiscovery.Summarize(mapping, filtering, behindNat));
}
