using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Review L6 on STUN/TURN over TCP: a client that trickles a message one byte a second is closed when
/// its message is not complete by the deadline (before, every byte reset the 300 s idle timer); open
/// connections have a global cap besides the per-IP one, and past it new connections are closed at once
/// and counted; 200 slow clients do not stop a well-behaved client's Binding from being answered.
/// </summary>
public sealed class StunTcpSlowlorisTests
{
    [Fact]
    public async Task TricklingClients_AreClosed_TheCapHolds_AndAWellBehavedClientIsAnswered_L6()
    {
        const int slowClients = 200;
        const int cap = 50;
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:Tcp:MessageTimeoutSeconds=2", $"Relay:Stun:Tcp:MaxConnections={cap}", "Relay:Stun:Tcp:MaxConnectionsPerIp=1000");
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.StunPort);

        // Each slow client sends a Binding request one byte a second until the server closes it.
        var slow = Enumerable.Range(0, slowClients).Select(_ => TrickleUntilClosedAsync(endpoint)).ToArray();

        // A well-behaved client is answered: at once, or after the deadline frees a slot.
        await Poll.UntilAsync(() => TryBindingAsync(endpoint), "a Binding request over TCP to be answered", TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(200));

        // Every slow client was closed by the server, none completed its request.
        var completed = await Task.WhenAll(slow);
        Assert.DoesNotContain(true, completed);
        Assert.True(server.Metrics.Drops(StunTransport.Tcp, StunDropReason.ConnectionCap) > 0, "no connection was refused by the global cap");
        Assert.True(server.Metrics.Drops(StunTransport.Tcp, StunDropReason.MessageTimeout) > 0, "no connection was closed by the message deadline");

        // Every slow client was refused or timed out (the well-behaved client's refused tries add to the first).
        var ended = server.Metrics.Drops(StunTransport.Tcp, StunDropReason.ConnectionCap) + server.Metrics.Drops(StunTransport.Tcp, StunDropReason.MessageTimeout);
        Assert.True(ended >= slowClients, $"{ended} connections refused or timed out, expected at least {slowClients}");
    }

    /// <summary>True when the whole request got out and was answered; false when the server closed first.</summary>
    private static async Task<bool> TrickleUntilClosedAsync(IPEndPoint endpoint)
    {
        using var tcp = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true };
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var request = StunTestClient.Request(StunTransactionId.NewRandom());
        try
        {
            // A connection the cap refuses may already be reset while it connects.
            await tcp.ConnectAsync(endpoint, bound.Token);
            var stream = tcp.GetStream();
            var read = stream.ReadAsync(new byte[64], bound.Token).AsTask();
            foreach (var b in request)
            {
                // The attacker's pace, not a synchronisation: one byte, then a second's pause, unless closed.
                if (await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(1), bound.Token)) == read)
                {
                    return await read > 0;
                }

                await stream.WriteAsync(new[] { b }, bound.Token);
            }

            return await read > 0;
        }
        catch (IOException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static async Task<bool> TryBindingAsync(IPEndPoint endpoint)
    {
        try
        {
            using var tcp = new TcpClient(AddressFamily.InterNetwork);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await tcp.ConnectAsync(endpoint, timeout.Token);
            var stream = tcp.GetStream();
            await stream.WriteAsync(StunTestClient.Request(StunTransactionId.NewRandom()), timeout.Token);
            return await StunTestClient.ReadFramedAsync(stream, timeout.Token) is { Length: > 0 };
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
        {
            return false;
        }
    }
}
