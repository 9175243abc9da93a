using System.Net;
using System.Security.Cryptography;
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
        var clock = new PeriodicFakeClock();
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
        await AdvanceUntilAsync(clock, () => ended.Task.IsCompleted);
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
        await AdvanceUntilAsync(clock, () => sessionA.RecheckRounds >= 2);
        Assert.Equal(2, sessionA.RecheckRounds);
        Assert.Equal(checksAtEnd + (2 * targets), sessionA.ChecksSent);
        Assert.True(clock.GetElapsedTime(endedAt) >= TimeSpan.FromSeconds(10) - Step, $"two rounds after {clock.GetElapsedTime(endedAt)}, before two intervals");
        Assert.Equal(0, sessionB.ChecksReceived);
        Assert.Equal(PeerPath.Relayed, sessionA.Channel.Path);

        // 3. The firewall opens: the next round finds the path, A nominates it, both sides go direct.
        Volatile.Write(ref open, true);
        await AdvanceUntilAsync(clock, () => directA.IsCompleted && directB.IsCompleted);
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
    private static async Task AdvanceUntilAsync(PeriodicFakeClock clock, Func<bool> condition)
    {
        using var timeout = new CancellationTokenSource(Bound);
        while (!condition())
        {
            clock.Advance(Step);
            await Task.Delay(5, timeout.Token);
        }
    }

    /// <summary>A TimeProvider whose clock and (periodic) timers move only in <see cref="Advance"/>.</summary>
    private sealed class PeriodicFakeClock : TimeProvider
    {
        private readonly Lock _gate = new();
        private readonly List<Timer> _timers = [];
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp()
        {
            lock (_gate)
            {
                return _ticks;
            }
        }

        public override DateTimeOffset GetUtcNow() => DateTimeOffset.UnixEpoch.AddTicks(GetTimestamp());

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new Timer(this, callback, state);
            timer.Change(dueTime, period);
            return timer;
        }

        public void Advance(TimeSpan by)
        {
            List<Timer> due = [];
            lock (_gate)
            {
                _ticks += by.Ticks;
                foreach (var timer in _timers.Where(t => t.DueAt <= _ticks).ToList())
                {
                    due.Add(timer);
                    if (timer.Period > TimeSpan.Zero && timer.Period != Timeout.InfiniteTimeSpan)
                    {
                        // One firing per advance: a periodic timer that fell behind catches up with the clock.
                        timer.DueAt = _ticks + timer.Period.Ticks;
                    }
                    else
                    {
                        _timers.Remove(timer);
                    }
                }
            }

            foreach (var timer in due)
            {
                timer.Fire();
            }
        }

        private void Arm(Timer timer, TimeSpan dueTime, TimeSpan period)
        {
            lock (_gate)
            {
                _timers.Remove(timer);
                timer.Period = period;
                if (dueTime != Timeout.InfiniteTimeSpan)
                {
                    timer.DueAt = _ticks + dueTime.Ticks;
                    _timers.Add(timer);
                }
            }
        }

        private sealed class Timer(PeriodicFakeClock clock, TimerCallback callback, object? state) : ITimer
        {
            public long DueAt { get; set; }

            public TimeSpan Period { get; set; }

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                clock.Arm(this, dueTime, period);
                return true;
            }

            public void Fire() => callback(state);

            public void Dispose() => clock.Arm(this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }
}
