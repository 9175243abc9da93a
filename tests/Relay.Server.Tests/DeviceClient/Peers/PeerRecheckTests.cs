using System.Net;
using System.Security.Cryptography;
using Microsoft.Extensions.Time.Testing;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Rendezvous;
using Relay.Server.Tests.DeviceClientNat;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// PeerOptions.RecheckInterval on 127.0.0.1: side A runs on a fake clock and its checks are dropped (a
/// firewall, PeerSession.CheckFilter) until its window of checks has ended; B knows no direct candidate of
/// A, so only A's checks can find the path. Re-check rounds then send exactly one check per target, and once
/// the firewall opens a re-check brings both sides direct. Our TURN server in-process carries the relay path.
/// </summary>
public sealed class PeerRecheckTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(100);

    private static PeerOptions Options(Action<PeerOptions>? configure = null)
    {
        var options = new PeerOptions
        {
            LocalAddress = IPAddress.Loopback,
            AllowLoopbackCandidates = true,
            BirthdayProbing = false,
            InitialRetransmitTimeout = TimeSpan.FromMilliseconds(100),
            ServerRetransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 5 },
        };
        configure?.Invoke(options);
        return options;
    }

    [Fact]
    public async Task ARelayedChannel_ReChecksEveryInterval_OneCheckPerTarget_AndGoesDirectWhenThePathOpens()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        var servers = new PeerServers(server.Endpoint, server.Endpoint, server.Endpoint, new TurnCredentials(TurnServerUnderTest.User, TurnServerUnderTest.Password));
        var a = Options(static p =>
        {
            p.CheckTimeout = TimeSpan.FromSeconds(1);
            p.RecheckInterval = TimeSpan.FromSeconds(5);
        });
        var b = Options();
        var localA = await PeerCandidates.GatherAsync(a, servers, CancellationToken.None);
        var localB = await PeerCandidates.GatherAsync(b, servers, CancellationToken.None);
        var key = RandomNumberGenerator.GetBytes(32);
        var sessionId = Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();
        var clock = new FakeTimeProvider();
        var results = new List<string>();
        await using var sessionA = new PeerSession(new PeerSessionSetup(sessionId, "b", key, true, localB.Candidates, null, null), localA, a, clock, (_, path, _) => { lock (results) { results.Add(path); } });
        IReadOnlyList<RendezvousCandidate> relayOfA = [.. localA.Candidates.Where(static c => c.Type == "relay")];
        await using var sessionB = new PeerSession(new PeerSessionSetup(sessionId, "a", key, false, relayOfA, null, null), localB, b, TimeProvider.System);
        var open = false;
        sessionA.CheckFilter = _ => Volatile.Read(ref open);
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        sessionA.Channel.ChecksEnded += (_, _) => ended.TrySetResult();
        var directA = WaitDirectAsync(sessionA.Channel);
        var directB = WaitDirectAsync(sessionB.Channel);
        await Task.WhenAll(sessionA.StartAsync(CancellationToken.None), sessionB.StartAsync(CancellationToken.None)).WaitAsync(Bound);

        // 1. The window of checks ends with every check dropped: relayed, and no re-check yet.
        await AdvanceUntilAsync(clock, () => ended.Task.IsCompleted, "the end of the window of checks");
        lock (results)
        {
            Assert.Equal(["relayed"], results);
        }

        Assert.Equal(PeerPath.Relayed, sessionA.Channel.Path);
        Assert.Equal(0, sessionA.RecheckRounds);
        var targets = sessionA.CheckTargetCount;
        Assert.True(targets >= 1, "A has no direct target to re-check");
        var checksAtEnd = sessionA.ChecksSent;
        Assert.True(checksAtEnd >= 2 * targets, "the first window ran fewer than two rounds");

        // 2. Re-checks while the path stays closed: one check per target per round, no retransmission, still relayed.
        var endedAt = clock.GetTimestamp();
        await AdvanceUntilAsync(clock, () => sessionA.RecheckRounds >= 2, "two re-check rounds");
        Assert.Equal(2, sessionA.RecheckRounds);
        Assert.Equal(checksAtEnd + (2 * targets), sessionA.ChecksSent);
        Assert.True(clock.GetElapsedTime(endedAt) >= TimeSpan.FromSeconds(10) - Step, $"two rounds after {clock.GetElapsedTime(endedAt)}, before two intervals");
        Assert.Equal(0, sessionB.ChecksReceived);
        Assert.Equal(PeerPath.Relayed, sessionA.Channel.Path);

        // 3. The firewall opens: the next round finds the path, A nominates it, both sides go direct.
        Volatile.Write(ref open, true);
        await AdvanceUntilAsync(clock, () => directA.IsCompleted && directB.IsCompleted, "both sides direct");
        await Task.WhenAll(directA, directB);
        Assert.True(sessionA.RecheckRounds >= 3);
        Assert.True(sessionB.ChecksReceived >= 1);
        Assert.Equal(sessionA.LocalEndPoint, sessionB.Channel.RemoteEndPoint);
        Assert.Equal(sessionB.LocalEndPoint, sessionA.Channel.RemoteEndPoint);
        lock (results)
        {
            Assert.Equal(["relayed"], results); // the result was reported once, at the end of the first window
        }
    }

    private static Task WaitDirectAsync(PeerChannel channel)
    {
        var direct = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        channel.PathChanged += (_, e) =>
        {
            if (e.Current == PeerPath.Direct)
            {
                direct.TrySetResult();
            }
        };
        return direct.Task;
    }

    /// <summary>Moves the fake clock a step at a time, yielding so the session's loop runs, until the condition holds (bounded).</summary>
    private static Task AdvanceUntilAsync(FakeTimeProvider clock, Func<bool> condition, string what) =>
        Poll.UntilAsync(
            () =>
            {
                if (condition())
                {
                    return true;
                }

                clock.Advance(Step);
                return false;
            },
            what,
            Bound,
            TimeSpan.FromMilliseconds(5));
}
