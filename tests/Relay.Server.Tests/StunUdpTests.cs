using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using static Relay.Server.Tests.StunTestClient;

namespace Relay.Server.Tests;

public sealed class StunUdpTests
{
    [Theory]
    [InlineData("127.0.0.1", 32)]
    [InlineData("::1", 32)]
    [InlineData("127.0.0.1", 0)]
    [InlineData("::1", 0)]
    public async Task Binding_ReturnsClientAddressAsXorMappedAddress_WithSoftwareAndFingerprint(string address, int batchSize)
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Stun:Software=relay-test", $"Relay:Stun:UdpBatchSize={batchSize}");
        var ip = IPAddress.Parse(address);
        using var client = UdpClient(ip);
        var id = StunTransactionId.NewRandom();

        var (bytes, from) = await ExchangeAsync(client, Request(id), new IPEndPoint(ip, server.StunPort));
        var response = Parse(bytes);

        Assert.Equal(StunClass.SuccessResponse, response.Class);
        Assert.Equal((ushort)StunMethod.Binding, response.Method);
        Assert.Equal(id, response.TransactionId);
        Assert.Equal(client.LocalEndPoint, response.XorMapped);
        Assert.Equal(server.StunPort, from.Port);
        Assert.True(response.FingerprintValid, "RFC 8489 §14.7: FINGERPRINT must verify");
        Assert.Equal("relay-test", Encoding.UTF8.GetString(response.Software!));

        // RFC 8489 §14.7: FINGERPRINT is the last attribute. No MAPPED-ADDRESS for RFC 5389+ clients: keep responses small.
        Assert.Equal((ushort)StunAttributeType.Fingerprint, response.Types[^1]);
        Assert.DoesNotContain((ushort)StunAttributeType.MappedAddress, response.Types);
    }

    [Fact]
    public async Task ClassicRfc3489Request_GetsMappedAddress_EchoesFullTransactionId_AndWordAlignedSoftware()
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Stun:Software=Relay");
        using var client = UdpClient(IPAddress.Loopback);
        var id = StunTransactionId.NewRandom();

        var (bytes, _) = await ExchangeAsync(client, ClassicRequest(id, 0x01020304), new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var response = Parse(bytes);

        Assert.Equal(StunClass.SuccessResponse, response.Class);
        Assert.Equal(0x01020304u, response.MagicCookie);
        Assert.Equal(id, response.TransactionId);
        Assert.Equal(client.LocalEndPoint, response.Mapped);
        Assert.Null(response.XorMapped);
        Assert.False(response.HasFingerprint);

        // RFC 3489 §11.2.10: SERVER must be a multiple of 4 bytes; classic parsers reject "Relay" (5).
        Assert.Equal("Relay   ", Encoding.UTF8.GetString(response.Software!));

        // The test server binds 127.0.0.1 explicitly, so SOURCE-ADDRESS can say where the request arrived.
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, server.StunPort), response.ResponseOrigin);
    }

    [Fact]
    public async Task ClassicRequest_ToAWildcardListener_GetsNoUnspecifiedSourceAddress()
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Stun:ListenAddresses:0=::");
        using var client = UdpClient(IPAddress.Loopback);

        var (bytes, _) = await ExchangeAsync(client, ClassicRequest(StunTransactionId.NewRandom(), 9), new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var response = Parse(bytes);

        Assert.Equal(client.LocalEndPoint, response.Mapped);
        Assert.Null(response.ResponseOrigin);
    }

    [Fact]
    public async Task UnknownComprehensionRequiredAttribute_Gets420WithUnknownAttributes_OptionalOneIsIgnored()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var client = UdpClient(IPAddress.Loopback);
        var target = new IPEndPoint(IPAddress.Loopback, server.StunPort);

        // RFC 8489 §6.3.1.1.
        var (bytes, _) = await ExchangeAsync(client, Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) =>
        {
            w.WriteAttribute(0x7F01, "x"u8);
            w.WriteAttribute(0x7F02, "yy"u8);
        }), target);
        var response = Parse(bytes);
        Assert.Equal(StunClass.ErrorResponse, response.Class);
        Assert.Equal(420, response.ErrorCode);
        Assert.Equal(new ushort[] { 0x7F01, 0x7F02 }, response.UnknownAttributes);
        Assert.True(response.FingerprintValid);

        // Comprehension-optional (0x8000-0xFFFF) unknowns are ignored (RFC 8489 §14).
        (bytes, _) = await ExchangeAsync(client, Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteAttribute(0xBEEF, "opt"u8)), target);
        Assert.Equal(StunClass.SuccessResponse, Parse(bytes).Class);

        // Without RFC 5780 configured, CHANGE-REQUEST is not understood, which is how clients learn there is no alternate address.
        (bytes, _) = await ExchangeAsync(client, Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteChangeRequest(true, true)), target);
        response = Parse(bytes);
        Assert.Equal(420, response.ErrorCode);
        Assert.Equal(new ushort[] { (ushort)StunAttributeType.ChangeRequest }, response.UnknownAttributes);
    }

    [Fact]
    public async Task MalformedButParseableRequest_Gets400()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var client = UdpClient(IPAddress.Loopback);
        var id = StunTransactionId.NewRandom();

        // A USERHASH must be 32 bytes (RFC 8489 §14.4): the header frames correctly, the body does not.
        var request = Request(id, static (ref StunMessageWriter w) => w.WriteAttribute(StunAttributeType.Userhash, new byte[5]), fingerprint: false);
        var (bytes, _) = await ExchangeAsync(client, request, new IPEndPoint(IPAddress.Loopback, server.StunPort));
        var response = Parse(bytes);

        Assert.Equal(StunClass.ErrorResponse, response.Class);
        Assert.Equal(400, response.ErrorCode);
        Assert.Equal(id, response.TransactionId);
        Assert.Equal(1, server.Metrics.Responses(StunTransport.Udp, 400));
    }

    [Fact]
    public async Task Garbage_TruncatedMessages_BadFingerprints_AndIndications_AreDroppedAndCounted()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var client = UdpClient(IPAddress.Loopback);
        var target = new IPEndPoint(IPAddress.Loopback, server.StunPort);

        var badFingerprint = Request(StunTransactionId.NewRandom());
        badFingerprint[^1] ^= 0xFF;
        var truncated = Request(StunTransactionId.NewRandom())[..^4];
        var indication = new byte[20];
        new StunMessageWriter(indication, StunHeader.ComposeType(StunMethod.Binding, StunClass.Indication), StunTransactionId.NewRandom());

        await client.SendToAsync("GET / HTTP/1.1\r\n\r\n"u8.ToArray(), SocketFlags.None, target);
        await client.SendToAsync(new byte[] { 0, 1, 0, 3, 1, 2, 3 }, SocketFlags.None, target);
        await client.SendToAsync(truncated, SocketFlags.None, target);
        await client.SendToAsync(badFingerprint, SocketFlags.None, target);
        await client.SendToAsync(indication, SocketFlags.None, target);

        // One source maps to one receive loop, so this reply proves everything before it was handled.
        var id = StunTransactionId.NewRandom();
        var (bytes, _) = await ExchangeAsync(client, Request(id), target);
        Assert.Equal(id, Parse(bytes).TransactionId);

        Assert.Equal(4, server.Metrics.Drops(StunTransport.Udp, StunDropReason.NotStun));
        Assert.Equal(1, server.Metrics.Drops(StunTransport.Udp, StunDropReason.NotRequest));
        Assert.Equal(1, server.Metrics.Responses(StunTransport.Udp, 200));
        Assert.Equal(0, client.Available);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(0)]
    public async Task BurstFromManySockets_EachGetsItsOwnAddressBack(int batchSize)
    {
        // Many datagrams land in one recvmmsg batch; each answer must go to, and describe, its own sender.
        await using var server = await RelayTestServer.StartAsync("Relay:Stun:RateLimit:Enabled=false", $"Relay:Stun:UdpBatchSize={batchSize}");
        var target = new IPEndPoint(IPAddress.Loopback, server.StunPort);
        var clients = Enumerable.Range(0, 64).Select(static _ => UdpClient(IPAddress.Loopback)).ToArray();
        try
        {
            var ids = clients.Select(static _ => StunTransactionId.NewRandom()).ToArray();
            for (var round = 0; round < 3; round++)
            {
                await Task.WhenAll(clients.Select((client, i) => client.SendToAsync(Request(ids[i]), SocketFlags.None, target)));
                for (var i = 0; i < clients.Length; i++)
                {
                    var response = Parse((await ReceiveAsync(clients[i])).Response);
                    Assert.Equal(ids[i], response.TransactionId);
                    Assert.Equal(clients[i].LocalEndPoint, response.XorMapped);
                }
            }

            Assert.Equal(64 * 3, server.Metrics.Responses(StunTransport.Udp, 200));
        }
        finally
        {
            Array.ForEach(clients, static c => c.Dispose());
        }
    }

    [Fact]
    public async Task OversizeDatagram_IsDroppedAsTooLarge()
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Stun:MaxMessageSize=600");
        using var client = UdpClient(IPAddress.Loopback);
        var target = new IPEndPoint(IPAddress.Loopback, server.StunPort);

        await client.SendToAsync(Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WritePadding(700)), SocketFlags.None, target);
        var id = StunTransactionId.NewRandom();
        var (bytes, _) = await ExchangeAsync(client, Request(id), target);

        Assert.Equal(id, Parse(bytes).TransactionId);
        Assert.Equal(1, server.Metrics.Drops(StunTransport.Udp, StunDropReason.TooLarge));
    }

    [Fact]
    public async Task RateLimit_AnswersTheBurst_ThenDropsAndCounts()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:RateLimit:RequestsPerSecond=1", "Relay:Stun:RateLimit:Burst=3");
        using var client = UdpClient(IPAddress.Loopback);
        var target = new IPEndPoint(IPAddress.Loopback, server.StunPort);

        for (var i = 0; i < 10; i++)
        {
            await client.SendToAsync(Request(StunTransactionId.NewRandom()), SocketFlags.None, target);
        }

        // Counters move as the loop handles each packet; wait on them rather than on time.
        await Poll.UntilAsync(
            () => server.Metrics.Responses(StunTransport.Udp, 200) + server.Metrics.Drops(StunTransport.Udp, StunDropReason.RateLimited) == 10,
            "all ten requests to be answered or dropped");

        // The refill is 1/s, so at most one more token can have appeared while we sent.
        var answered = server.Metrics.Responses(StunTransport.Udp, 200);
        Assert.InRange(answered, 3, 4);
        Assert.Equal(10 - answered, server.Metrics.Drops(StunTransport.Udp, StunDropReason.RateLimited));
        for (var i = 0; i < answered; i++)
        {
            Assert.Equal(StunClass.SuccessResponse, Parse((await ReceiveAsync(client)).Response).Class);
        }

        // Another source IP has its own bucket.
        using var other = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
        other.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        var (bytes, _) = await ExchangeAsync(other, Request(StunTransactionId.NewRandom()), new IPEndPoint(IPAddress.IPv6Loopback, server.StunPort));
        Assert.Equal(StunClass.SuccessResponse, Parse(bytes).Class);
    }

    [Fact]
    public void RateLimiter_TableIsBounded_AndEvictsTheLeastRecentlySeen()
    {
        var limiter = new SourceRateLimiter(requestsPerSecond: 1, burst: 1, maxTrackedSources: 16);
        var first = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 1));
        Assert.True(limiter.TryAcquire(first));
        Assert.False(limiter.TryAcquire(first));

        // Thousands of distinct sources cannot grow the table; the evicted first source gets a fresh bucket.
        for (var i = 0; i < 5000; i++)
        {
            Assert.True(limiter.TryAcquire(StunAddress.FromEndPoint(new IPEndPoint(new IPAddress(0x0A000000u + (uint)i), 1))));
        }

        Assert.True(limiter.TryAcquire(first));
    }

    [Fact]
    public async Task MetricsEndpoint_ExposesCountersInPrometheusText()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var client = UdpClient(IPAddress.Loopback);
        await ExchangeAsync(client, Request(StunTransactionId.NewRandom()), new IPEndPoint(IPAddress.Loopback, server.StunPort));

        using var http = new HttpClient();
        var text = await http.GetStringAsync(new Uri($"http://127.0.0.1:{server.HttpPort}/metrics"));
        Assert.Contains("relay_stun_requests_total{transport=\"udp\",kind=\"rfc5389\"} 1", text, StringComparison.Ordinal);
        Assert.Contains("relay_stun_responses_total{transport=\"udp\",code=\"200\"} 1", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE relay_stun_drops_total counter", text, StringComparison.Ordinal);

        var health = await http.GetStringAsync(new Uri($"http://127.0.0.1:{server.HttpPort}/healthz"));
        Assert.Contains($"stun udp 127.0.0.1:{server.StunPort}", health, StringComparison.Ordinal);
    }
}
