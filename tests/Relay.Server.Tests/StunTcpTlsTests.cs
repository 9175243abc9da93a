using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using static Relay.Server.Tests.StunTestClient;

namespace Relay.Server.Tests;

public sealed class StunTcpTlsTests
{
    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    public async Task Tcp_PipelinedRequestsSplitAtOddBoundaries_AllAnsweredInOrder(string address)
    {
        await using var server = await RelayTestServer.StartAsync();
        var ip = IPAddress.Parse(address);
        using var tcp = new TcpClient(ip.AddressFamily);
        await tcp.ConnectAsync(ip, server.StunPort);
        var stream = tcp.GetStream();

        var ids = Enumerable.Range(0, 5).Select(static _ => StunTransactionId.NewRandom()).ToArray();
        var all = ids.SelectMany(static id => Request(id, static (ref StunMessageWriter w) => w.WriteAttribute(StunAttributeType.Software, "odd"u8))).ToArray();

        // Write in 7-byte pieces so headers and attributes straddle reads.
        for (var offset = 0; offset < all.Length; offset += 7)
        {
            await stream.WriteAsync(all.AsMemory(offset, Math.Min(7, all.Length - offset)));
            await stream.FlushAsync();
        }

        using var timeout = new CancellationTokenSource(ReplyTimeout);
        foreach (var id in ids)
        {
            var response = Parse((await ReadFramedAsync(stream, timeout.Token))!);
            Assert.Equal(id, response.TransactionId);
            Assert.Equal(tcp.Client.LocalEndPoint, response.XorMapped);
            Assert.True(response.FingerprintValid);
        }
    }

    [Fact]
    public async Task Tcp_Garbage_ClosesTheConnection_AndIsCounted()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, server.StunPort);
        var stream = tcp.GetStream();
        await stream.WriteAsync("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());

        using var timeout = new CancellationTokenSource(ReplyTimeout);
        Assert.Equal(0, await stream.ReadAsync(new byte[16], timeout.Token));
        await Poll.UntilAsync(() => server.Metrics.Drops(StunTransport.Tcp, StunDropReason.NotStun) == 1, "the drop to be counted");
    }

    [Fact]
    public async Task Tcp_DeclaredLengthOverLimit_ClosesBeforeAnyBodyIsSent()
    {
        await using var server = await RelayTestServer.StartAsync();
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, server.StunPort);
        var stream = tcp.GetStream();

        // A header announcing 65532 bytes: rejected on its first four bytes, never buffered.
        await stream.WriteAsync(new byte[] { 0x00, 0x01, 0xFF, 0xFC });
        using var timeout = new CancellationTokenSource(ReplyTimeout);
        Assert.Equal(0, await stream.ReadAsync(new byte[16], timeout.Token));
        await Poll.UntilAsync(() => server.Metrics.Drops(StunTransport.Tcp, StunDropReason.TooLarge) == 1, "the drop to be counted");
    }

    [Fact]
    public async Task Tcp_ChangeRequest_Gets400_BecauseItNeedsUdp()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, server.StunPort);
        var stream = tcp.GetStream();
        await stream.WriteAsync(Request(StunTransactionId.NewRandom(), static (ref StunMessageWriter w) => w.WriteChangeRequest(true, false)));

        using var timeout = new CancellationTokenSource(ReplyTimeout);
        var response = Parse((await ReadFramedAsync(stream, timeout.Token))!);
        Assert.Equal(400, response.ErrorCode);
    }

    [Fact]
    public async Task Tcp_ConnectionsPerIpAreLimited_AndTheRefusalIsCounted()
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Stun:Tcp:MaxConnectionsPerIp=2");
        var clients = new List<TcpClient>();
        try
        {
            for (var i = 0; i < 2; i++)
            {
                var ok = new TcpClient();
                clients.Add(ok);
                await ok.ConnectAsync(IPAddress.Loopback, server.StunPort);
                await ok.GetStream().WriteAsync(Request(StunTransactionId.NewRandom()));
                using var t = new CancellationTokenSource(ReplyTimeout);
                Assert.NotNull(await ReadFramedAsync(ok.GetStream(), t.Token));
            }

            var third = new TcpClient();
            clients.Add(third);
            await third.ConnectAsync(IPAddress.Loopback, server.StunPort);
            using var timeout = new CancellationTokenSource(ReplyTimeout);
            try
            {
                await third.GetStream().WriteAsync(Request(StunTransactionId.NewRandom()), timeout.Token);
                Assert.Null(await ReadFramedAsync(third.GetStream(), timeout.Token));
            }
            catch (IOException)
            {
                // A reset instead of an orderly close is an equally valid refusal.
            }

            Assert.Equal(1, server.Metrics.Drops(StunTransport.Tcp, StunDropReason.ConnectionLimit));
        }
        finally
        {
            clients.ForEach(static c => c.Dispose());
        }
    }

    [Fact]
    public async Task Tls_BindingWorks_WhenAPemCertificateIsConfigured()
    {
        var directory = Directory.CreateTempSubdirectory("relay-tls-").FullName;
        try
        {
            var (certificatePath, keyPath) = WriteSelfSignedPem(directory);
            await using var server = await RelayTestServer.StartAsync($"Relay:Tls:CertificatePath={certificatePath}", $"Relay:Tls:KeyPath={keyPath}");
            using var tcp = new TcpClient(AddressFamily.InterNetwork);
            await tcp.ConnectAsync(IPAddress.Loopback, server.TlsPort);
            await using var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false, static (_, _, _, _) => true);
            await tls.AuthenticateAsClientAsync("localhost");

            var id = StunTransactionId.NewRandom();
            await tls.WriteAsync(Request(id));
            using var timeout = new CancellationTokenSource(ReplyTimeout);
            var response = Parse((await ReadFramedAsync(tls, timeout.Token))!);

            Assert.Equal(id, response.TransactionId);
            Assert.Equal(tcp.Client.LocalEndPoint, response.XorMapped);
            Assert.True(server.Metrics.Responses(StunTransport.Tls, 200) == 1, "the response is counted under the tls transport");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    internal static (string Certificate, string Key) WriteSelfSignedPem(string directory)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var certificatePath = Path.Combine(directory, "cert.pem");
        var keyPath = Path.Combine(directory, "key.pem");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certificatePath, keyPath);
    }
}
