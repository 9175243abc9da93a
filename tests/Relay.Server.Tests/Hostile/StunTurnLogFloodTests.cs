using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.Tests.Turn;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Review M6 (STUN/TURN part): what an unauthenticated or hostile client can make the server log is
/// bounded. 1,000 bad requests of each kind are all counted in metrics, and give a handful of log lines
/// (one per 10 s per kind), with Debug on so that even the debug lines are seen.
/// </summary>
public sealed class StunTurnLogFloodTests
{
    private const int Flood = 1_000;

    // A bound, not a timing: one line per 10 s per kind, so more than this needs minutes of flooding.
    private const int MaxLines = 10;

    [Fact]
    public async Task AThousandRefusedTurnRequests_AreCounted_AndLogAFewLines_M6()
    {
        var log = new CountingLoggerProvider();
        await using var server = await RelayTestServer.StartAsync(
            services => services.AddSingleton<ILoggerProvider>(log),
            "Relay:Turn:Users:0=alice:pw", "Relay:Turn:Users:1=bob:pw", "Relay:Turn:MaxAllocationsPerUser=1",
            "Relay:Stun:RateLimit:Enabled=false", "Logging:LogLevel:Default=Debug");
        var metrics = server.Services.GetRequiredService<TurnMetrics>();

        // 401: Allocate without credentials.
        await using var anonymous = TurnTestClient.Udp(server, "mallory", "x");
        for (var i = 0; i < Flood; i++)
        {
            TurnTestClient.AssertError(await anonymous.RequestAsync(anonymous.Build(StunMethod.Allocate, TurnTestClient.UdpTransport, authenticate: false)), 401);
        }

        // 403: an authenticated client asking for a denied peer.
        await using var alice = TurnTestClient.Udp(server, "alice", "pw");
        await alice.AllocateAsync();
        for (var i = 0; i < Flood; i++)
        {
            TurnTestClient.AssertError(await alice.SendAuthenticatedAsync(StunMethod.CreatePermission, static (ref StunMessageWriter w) => TurnTestClient.WritePeer(ref w, new IPEndPoint(IPAddress.Parse("10.0.0.1"), 80))), 403);
        }

        // 486: alice's quota is used; her second 5-tuple asks again and again.
        await using var alice2 = TurnTestClient.Udp(server, "alice", "pw");
        for (var i = 0; i < Flood; i++)
        {
            TurnTestClient.AssertError(await alice2.SendAuthenticatedAsync(StunMethod.Allocate, TurnTestClient.UdpTransport), 486);
        }

        Assert.Equal(Flood, metrics.Responses(403));
        Assert.Equal(Flood, metrics.Drops(TurnDropReason.PeerDenied));
        Assert.Equal(Flood, metrics.Responses(486));
        Assert.Equal(Flood, metrics.LimitHits(TurnLimit.AllocationsPerUser));
        Assert.True(metrics.Responses(401) >= Flood);

        log.AssertAtMost(4007, MaxLines); // refused (401/438/...)
        log.AssertAtMost(4006, MaxLines); // peer denied
        log.AssertAtMost(4005, MaxLines); // limit hit
        log.AssertNoLineBreaks();
    }

    [Fact]
    public async Task AThousandGarbageTcpConnections_AreCounted_AndLogAFewLines_M6()
    {
        var log = new CountingLoggerProvider();
        await using var server = await RelayTestServer.StartAsync(
            services => services.AddSingleton<ILoggerProvider>(log), "Logging:LogLevel:Default=Debug");

        // Not STUN (RFC 8489 §5: the top two bits must be zero) and not ChannelData (RFC 7983): each
        // connection is closed by the server after its garbage.
        var garbage = new byte[20];
        Array.Fill(garbage, (byte)0xFF);
        await Parallel.ForAsync(0, Flood, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (_, cancel) =>
        {
            using var tcp = new TcpClient(AddressFamily.InterNetwork);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            timeout.CancelAfter(TurnTestClient.Timeout);
            await tcp.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.StunPort), timeout.Token);
            var stream = tcp.GetStream();
            await stream.WriteAsync(garbage, timeout.Token);
            var buffer = new byte[64];
            while (await stream.ReadAsync(buffer, timeout.Token) > 0)
            {
            }
        });

        await Poll.UntilAsync(() => server.Metrics.Drops(StunTransport.Tcp, StunDropReason.NotStun) == Flood, $"{Flood} not_stun drops over TCP");
        log.AssertAtMost(3002, MaxLines); // not STUN
        log.AssertAtMost(3003, MaxLines); // connection ended (debug)
    }

    /// <summary>Every line the server writes, at every level, by event id.</summary>
    private sealed class CountingLoggerProvider : ILoggerProvider
    {
        private readonly ConcurrentDictionary<int, int> _byEvent = new();
        private readonly ConcurrentQueue<string> _lines = new();

        public ILogger CreateLogger(string categoryName) => new Counter(this);

        public void Dispose()
        {
        }

        public void AssertAtMost(int eventId, int max)
        {
            var count = _byEvent.TryGetValue(eventId, out var n) ? n : 0;
            Assert.True(count <= max, $"event {eventId} was logged {count} times (at most {max} expected):\n{string.Join("\n", _lines.Take(20))}");
        }

        public void AssertNoLineBreaks() =>
            Assert.DoesNotContain(_lines, static line => line.Contains('\n', StringComparison.Ordinal) || line.Contains('\r', StringComparison.Ordinal));

        private sealed class Counter(CountingLoggerProvider owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                owner._byEvent.AddOrUpdate(eventId.Id, 1, static (_, n) => n + 1);
                if (owner._lines.Count < 10_000)
                {
                    owner._lines.Enqueue($"{eventId.Id} {logLevel}: {formatter(state, exception)}");
                }
            }
        }
    }
}
