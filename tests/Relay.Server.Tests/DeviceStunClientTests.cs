using System.Net;
using System.Net.Sockets;
using Relay.DeviceClient.Nat;

namespace Relay.Server.Tests;

/// <summary>DeviceClient's STUN client against our server and against coturn's turnserver.</summary>
public sealed class DeviceStunClientTests
{
    private static readonly StunClientOptions Fast = new() { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 7, LastWaitMultiplier = 16 };

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("::1")]
    public async Task LearnsItsReflexiveAddress_FromOurServer(string address)
    {
        await using var server = await RelayTestServer.StartAsync();
        var ip = IPAddress.Parse(address);
        using var socket = new Socket(ip.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(ip, 0));

        var result = await StunClient.BindingAsync(socket, new IPEndPoint(ip, server.StunPort), false, false, Fast);

        Assert.Equal(socket.LocalEndPoint, result.MappedAddress);
        Assert.Equal(new IPEndPoint(ip, server.StunPort), result.RespondedFrom);
        Assert.Null(result.OtherAddress);
    }

    [Fact]
    public async Task LearnsItsReflexiveAddress_FromCoturn()
    {
        var port = FreePorts.UdpAndTcpPair();
        var turnserver = Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(static d => Path.Combine(d, "turnserver")).FirstOrDefault(File.Exists);
        Assert.True(turnserver is not null, "turnserver is not installed; ./test.sh installs it (apt-get install coturn)");
        await using var coturn = ToolProcess.Start(
            turnserver,
            ["-n", "--stun-only", "-L", "127.0.0.1", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout", "--simple-log"],
            TimeSpan.FromMinutes(2));
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        // Retransmission rides out coturn's start-up: the first requests may find no listener yet.
        var result = await StunClient.BindingAsync(socket, new IPEndPoint(IPAddress.Loopback, port), false, false, Fast);
        Assert.Equal(socket.LocalEndPoint, result.MappedAddress);
    }

    [Fact]
    public async Task Retransmits_WhenRequestsAreLost()
    {
        await using var server = await RelayTestServer.StartAsync();

        // A lossy hop in front of the real server: swallows the first two requests, forwards the rest.
        using var hop = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        hop.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        upstream.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var forwarded = 0;
        using var stop = new CancellationTokenSource();
        var relay = Task.Run(async () =>
        {
            var buffer = new byte[2048];
            var seen = 0;
            while (!stop.IsCancellationRequested)
            {
                var request = await hop.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), stop.Token);
                if (++seen <= 2)
                {
                    continue;
                }

                Interlocked.Increment(ref forwarded);
                await upstream.SendToAsync(buffer.AsMemory(0, request.ReceivedBytes), SocketFlags.None, new IPEndPoint(IPAddress.Loopback, server.StunPort));
                var response = await upstream.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), stop.Token);
                await hop.SendToAsync(buffer.AsMemory(0, response.ReceivedBytes), SocketFlags.None, request.RemoteEndPoint);
            }
        });

        var result = await StunClient.BindingAsync(new IPEndPoint(IPAddress.Loopback, ((IPEndPoint)hop.LocalEndPoint!).Port), Fast);

        // The server saw the hop's upstream socket, proving the answer came through the real server.
        Assert.Equal(upstream.LocalEndPoint, result.MappedAddress);
        Assert.True(Volatile.Read(ref forwarded) >= 1);
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => relay);
    }

    [Fact]
    public async Task GivesUp_WithTimeoutException_WhenNothingAnswers()
    {
        using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        silent.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var options = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(10), MaxRequests = 3, LastWaitMultiplier = 2 };

        await Assert.ThrowsAsync<TimeoutException>(() => StunClient.BindingAsync((IPEndPoint)silent.LocalEndPoint!, options));
        Assert.Equal(3, CountDatagrams(silent));
    }

    [Fact]
    public async Task ChangeRequest_AgainstOurRfc5780Mode_IsAnsweredFromTheOtherAddress()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var result = await StunClient.BindingAsync(socket, new IPEndPoint(IPAddress.Loopback, server.StunPort), changeIp: true, changePort: true, Fast);
        var other = new IPEndPoint(IPAddress.Parse("127.0.0.2"), server.StunPort + 1);
        Assert.Equal(other, result.RespondedFrom);
        Assert.Equal(other, result.ResponseOrigin);
        Assert.Equal(other, result.OtherAddress);
    }

    [Fact]
    public async Task ErrorResponses_SurfaceAsStunErrorResponseException()
    {
        // Our server without RFC 5780 rejects CHANGE-REQUEST with 420.
        await using var server = await RelayTestServer.StartAsync();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var error = await Assert.ThrowsAsync<StunErrorResponseException>(() => StunClient.BindingAsync(socket, new IPEndPoint(IPAddress.Loopback, server.StunPort), true, false, Fast));
        Assert.Equal(420, error.Code);
    }

    private static int CountDatagrams(Socket socket)
    {
        var count = 0;
        var buffer = new byte[2048];
        while (socket.Available > 0)
        {
            socket.Receive(buffer);
            count++;
        }

        return count;
    }
}
