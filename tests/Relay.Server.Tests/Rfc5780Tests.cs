using System.Net;
using Relay.Protocol.Stun;
using static Relay.Server.Tests.StunTestClient;

namespace Relay.Server.Tests;

/// <summary>RFC 5780 behaviour discovery on 127.0.0.1 (primary) and 127.0.0.2 (alternate).</summary>
public sealed class Rfc5780Tests
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task ChangeRequest_IsAnsweredFromTheRightSocket_AndResponseOriginSaysWhich(bool changeIp, bool changePort)
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        var alternatePort = server.StunPort + 1;
        using var client = UdpClient(IPAddress.Loopback);

        var request = Request(StunTransactionId.NewRandom(), (ref StunMessageWriter w) => w.WriteChangeRequest(changeIp, changePort));
        var (bytes, from) = await ExchangeAsync(client, request, new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var response = Parse(bytes);

        var expected = new IPEndPoint(changeIp ? IPAddress.Parse("127.0.0.2") : IPAddress.Loopback, changePort ? alternatePort : server.StunPort);
        Assert.Equal(StunClass.SuccessResponse, response.Class);
        Assert.Equal(expected, from);

        // RFC 5780 §7.3: RESPONSE-ORIGIN is where the response was sent from; §7.4: OTHER-ADDRESS differs in both IP and port.
        Assert.Equal(expected, response.ResponseOrigin);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("127.0.0.2"), alternatePort), response.OtherAddress);
        Assert.Equal(client.LocalEndPoint, response.XorMapped);
    }

    [Fact]
    public async Task ResponsePort_RedirectsTheResponseToAnotherPortOfTheSameHost()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        using var sender = UdpClient(IPAddress.Loopback);
        using var receiver = UdpClient(IPAddress.Loopback);
        var receiverPort = (ushort)((IPEndPoint)receiver.LocalEndPoint!).Port;

        var id = StunTransactionId.NewRandom();
        await sender.SendToAsync(Request(id, (ref StunMessageWriter w) => w.WriteResponsePort(receiverPort)), new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var (bytes, _) = await ReceiveAsync(receiver);
        var response = Parse(bytes);

        Assert.Equal(id, response.TransactionId);
        Assert.Equal(sender.LocalEndPoint, response.XorMapped);
    }

    [Fact]
    public async Task Padding_IsEchoed_SoLargeProbesWork_ButTheResponseNeverExceedsTheRequest()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        using var client = UdpClient(IPAddress.Loopback);

        var request = Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WritePadding(1500));
        var (bytes, _) = await ExchangeAsync(client, request, new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var response = Parse(bytes);

        Assert.InRange(response.PaddingLength, 1400, 1500);
        Assert.True(bytes.Length <= request.Length, $"response {bytes.Length} B must not exceed request {request.Length} B (no amplification)");
    }

    [Fact]
    public async Task ClassicRequest_GetsSourceAndChangedAddress()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        using var client = UdpClient(IPAddress.Loopback);

        var (bytes, from) = await ExchangeAsync(client, ClassicRequest(StunTransactionId.NewRandom(), 7, static (ref StunMessageWriter w) => w.WriteChangeRequest(false, true)), new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var response = Parse(bytes);

        Assert.Equal(server.StunPort + 1, from.Port);
        Assert.Equal(from, response.ResponseOrigin);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("127.0.0.2"), server.StunPort + 1), response.OtherAddress);
        Assert.Equal(client.LocalEndPoint, response.Mapped);
    }
}
