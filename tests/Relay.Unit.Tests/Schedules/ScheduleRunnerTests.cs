using Microsoft.Extensions.Logging.Abstractions;
using Relay.Server.Push.Commands;
using Relay.Server.Schedules;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Schedules;

/// <summary>
/// The schedule runner over the real command loop and both stores in one directory, on a fake clock. A
/// "life" is one run of the server on that directory; ending one without a clean stop stands for a crash
/// (nothing the runner does at stop is relied on: it is never stopped here, only dropped).
/// </summary>
public sealed class ScheduleRunnerTests
{
    private static readonly DateTimeOffset T0 = CommandLoopHarness.Start;

    [Fact]
    public async Task A_recurring_schedule_runs_across_restarts_and_crashes_with_no_missed_or_doubled_run()
    {
        var directory = Directory.CreateTempSubdirectory("relay-schedules-").FullName;
        try
        {
            string id;

            // Life 1: created at T0, every minute; runs at +1 min; crashes at +2 min after storing the run's
            // command but before recording the run as finished.
            await using (var life = await Life.StartAsync(directory, T0))
            {
                id = life.AddEvery("d1", TimeSpan.FromMinutes(1));
                await life.AdvanceAndRunAsync(TimeSpan.FromMinutes(1));
                life.Dispatch.Crash = Crash.AfterSend;
                await life.AdvanceAndRunAsync(TimeSpan.FromMinutes(1));
                Assert.Equal(T0.AddMinutes(2), life.Store.Find(id)!.PendingDue);
            }

            // Life 2, 5 s later: the pending +2 run is finished, its command found by key and not stored again.
            // It crashes at +3 min after recording the decision but before storing the command.
            await using (var life = await Life.StartAsync(directory, T0.AddMinutes(2).AddSeconds(5)))
            {
                await life.RunAsync();
                Assert.Null(life.Store.Find(id)!.PendingDue);
                life.Dispatch.Crash = Crash.BeforeSend;
                await life.AdvanceAndRunAsync(TimeSpan.FromSeconds(55));
                Assert.Equal(T0.AddMinutes(3), life.Store.Find(id)!.PendingDue);
            }

            // Life 3, at +3 min 20 s: the pending +3 run stores its command now; +4 runs on time; a clean stop at +4 min 30 s.
            await using (var life = await Life.StartAsync(directory, T0.AddSeconds(200)))
            {
                await life.RunAsync();
                await life.AdvanceAndRunAsync(TimeSpan.FromSeconds(40));
            }

            // Life 4, at +5 min 10 s: +5 came due while the server was down; it runs once, late, and nothing is skipped.
            await using (var life = await Life.StartAsync(directory, T0.AddSeconds(310)))
            {
                await life.RunAsync();
                await life.RunAsync();
            }

            // Life 5, at +9 min 30 s: +6..+9 were missed within the grace window: +9 runs once, three are skipped.
            await using (var life = await Life.StartAsync(directory, T0.AddSeconds(570)))
            {
                await life.RunAsync();
                var keys = life.CommandKeys("d1");
                var expected = new[] { 1, 2, 3, 4, 5, 9 }.Select(m => $"schedule:{id}:{T0.AddMinutes(m).ToUnixTimeMilliseconds()}").ToArray();
                Assert.Equal(expected, keys);
                var schedule = life.Store.Find(id)!;
                Assert.Equal(6, schedule.Runs);
                Assert.Equal(3, schedule.Skipped);
                Assert.Equal(0, schedule.Failed);
                Assert.Equal(T0.AddMinutes(9), schedule.LastRun);
                Assert.Equal(T0.AddMinutes(10), schedule.NextDue);
                Assert.Equal(3, life.Metrics.Skipped);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task After_downtime_beyond_the_grace_window_nothing_runs_until_the_next_occurrence_and_the_missed_runs_are_counted()
    {
        var directory = Directory.CreateTempSubdirectory("relay-schedules-").FullName;
        try
        {
            string id;
            await using (var life = await Life.StartAsync(directory, T0, graceSeconds: 60))
            {
                id = life.AddEvery("d1", TimeSpan.FromMinutes(5));
            }

            // Back at +15 min 30 s: +5, +10, +15 were missed; the latest is 30 s old, within 60 s: it runs, two are skipped.
            await using (var life = await Life.StartAsync(directory, T0.AddSeconds(930), graceSeconds: 60))
            {
                await life.RunAsync();
                Assert.Equal([$"schedule:{id}:{T0.AddMinutes(15).ToUnixTimeMilliseconds()}"], life.CommandKeys("d1"));
            }

            // Back at +37 min: +20..+35 were missed, the latest 2 min old: none runs, four are skipped, +40 is next.
            await using (var life = await Life.StartAsync(directory, T0.AddMinutes(37), graceSeconds: 60))
            {
                await life.RunAsync();
                Assert.Single(life.CommandKeys("d1"));
                var schedule = life.Store.Find(id)!;
                Assert.Equal(1, schedule.Runs);
                Assert.Equal(2 + 4, schedule.Skipped);
                Assert.Equal(T0.AddMinutes(40), schedule.NextDue);
                Assert.Equal(4, life.Metrics.Skipped);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_tag_schedule_sends_to_every_device_with_the_tag_at_each_run_and_failures_are_counted_by_reason()
    {
        var directory = Directory.CreateTempSubdirectory("relay-schedules-").FullName;
        try
        {
            await using var life = await Life.StartAsync(directory, T0);
            var lobby = life.AddEvery(null, TimeSpan.FromMinutes(1), tag: "lobby");
            var ghost = life.AddEvery("no-such-device", TimeSpan.FromMinutes(1));
            await life.AdvanceAndRunAsync(TimeSpan.FromMinutes(1));
            Assert.Single(life.CommandKeys("d1"));
            Assert.Empty(life.CommandKeys("d2"));
            Assert.Single(life.CommandKeys("d3"));
            Assert.Equal("sent 2", life.Store.Find(lobby)!.LastOutcome);
            Assert.Equal(1, life.Store.Find(ghost)!.Failed);
            Assert.Equal(1, life.Metrics.Failures(ScheduleFailure.UnknownDevice));
            Assert.Equal(1, life.Metrics.Runs);
            Assert.Equal(2, life.Metrics.Commands);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_paused_schedule_does_not_run_and_resumes_at_its_next_occurrence_without_catching_up()
    {
        var directory = Directory.CreateTempSubdirectory("relay-schedules-").FullName;
        try
        {
            await using var life = await Life.StartAsync(directory, T0);
            var id = life.AddEvery("d1", TimeSpan.FromMinutes(1));
            Assert.True(life.Store.SetPaused(id, paused: true, null));
            await life.AdvanceAndRunAsync(TimeSpan.FromMinutes(5));
            Assert.Empty(life.CommandKeys("d1"));
            var timing = life.Store.Find(id)!.Timing()!;
            Assert.True(life.Store.SetPaused(id, paused: false, timing.NextAfter(life.Harness.Time.GetUtcNow())));
            await life.RunAsync();
            Assert.Empty(life.CommandKeys("d1"));
            await life.AdvanceAndRunAsync(TimeSpan.FromMinutes(1));
            Assert.Equal([$"schedule:{id}:{T0.AddMinutes(6).ToUnixTimeMilliseconds()}"], life.CommandKeys("d1"));
            Assert.Equal(0, life.Store.Find(id)!.Skipped);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_run_whose_commands_cannot_be_stored_stays_pending_and_is_retried_soon()
    {
        var directory = Directory.CreateTempSubdirectory("relay-schedules-").FullName;
        try
        {
            await using var life = await Life.StartAsync(directory, T0);
            var id = life.AddEvery("d1", TimeSpan.FromMinutes(1));
            life.Dispatch.Crash = Crash.BeforeSend;
            life.Harness.Time.Advance(TimeSpan.FromMinutes(1));
            Assert.Equal(ScheduleRunner.RetryDelay, await life.Runner.RunDueAsync(CancellationToken.None));
            Assert.Empty(life.CommandKeys("d1"));
            life.Dispatch.Crash = Crash.None;
            life.Harness.Time.Advance(ScheduleRunner.RetryDelay);
            Assert.Equal(TimeSpan.FromSeconds(55), await life.Runner.RunDueAsync(CancellationToken.None));
            Assert.Single(life.CommandKeys("d1"));
            Assert.Equal(1, life.Store.Find(id)!.Runs);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void The_store_refuses_schedules_beyond_its_limits()
    {
        var directory = Directory.CreateTempSubdirectory("relay-schedules-").FullName;
        try
        {
            using var store = ScheduleStore.Open(directory);
            Assert.Null(store.TryAdd(Life.NewSchedule("d1", null, TimeSpan.FromMinutes(1), T0), maxTotal: 3, maxPerTarget: 2));
            Assert.Null(store.TryAdd(Life.NewSchedule("d1", null, TimeSpan.FromMinutes(1), T0), maxTotal: 3, maxPerTarget: 2));
            Assert.Equal(ScheduleLimit.PerTarget, store.TryAdd(Life.NewSchedule("d1", null, TimeSpan.FromMinutes(1), T0), maxTotal: 3, maxPerTarget: 2));
            Assert.Null(store.TryAdd(Life.NewSchedule(null, "d1", TimeSpan.FromMinutes(1), T0), maxTotal: 3, maxPerTarget: 2));
            Assert.Equal(ScheduleLimit.Schedules, store.TryAdd(Life.NewSchedule("d2", null, TimeSpan.FromMinutes(1), T0), maxTotal: 3, maxPerTarget: 2));
            Assert.Equal(3, store.List(null, null, null, 100).Count);
            if (!OperatingSystem.IsWindows())
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(directory, ScheduleStore.FileName)));
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private enum Crash
    {
        None,

        /// <summary>The process dies after the run's decision is stored, before its commands are.</summary>
        BeforeSend,

        /// <summary>The process dies after the run's commands are stored, before the run is recorded finished.</summary>
        AfterSend,
    }

    /// <summary>Wraps the real dispatch; "crashes" by throwing where the process would have died.</summary>
    private sealed class CrashingDispatch(IScheduleDispatch inner) : IScheduleDispatch
    {
        public Crash Crash { get; set; }

        public async Task<DispatchResult> SendAsync(Schedule schedule, string idempotencyKey, CancellationToken cancellationToken)
        {
            if (Crash == Crash.BeforeSend)
            {
                throw new IOException("crash before the commands are stored");
            }

            var result = await inner.SendAsync(schedule, idempotencyKey, cancellationToken);
            return Crash == Crash.AfterSend ? throw new IOException("crash after the commands are stored") : result;
        }
    }

    /// <summary>One life of the server on a data directory: the command loop, the schedule store and runner, a fake clock at <c>now</c>.</summary>
    private sealed class Life : IAsyncDisposable
    {
        private Life(CommandLoopHarness harness, int graceSeconds)
        {
            Harness = harness;
            Store = ScheduleStore.Open(harness.DataDirectory);
            Dispatch = new CrashingDispatch(new CommandDispatch(harness.Commands));
            Runner = new ScheduleRunner(Store, Dispatch, new ScheduleOptions { CatchUpGraceSeconds = graceSeconds }, Metrics, harness.Time, NullLogger<ScheduleRunner>.Instance);
        }

        public CommandLoopHarness Harness { get; }

        public ScheduleStore Store { get; }

        public CrashingDispatch Dispatch { get; }

        public ScheduleRunner Runner { get; }

        public ScheduleMetrics Metrics { get; } = new();

        public static async Task<Life> StartAsync(string directory, DateTimeOffset now, int graceSeconds = 3600)
        {
            var harness = await CommandLoopHarness.StartOnAsync(directory);
            harness.Time.SetUtcNow(now);
            return new Life(harness, graceSeconds);
        }

        public static Schedule NewSchedule(string? device, string? tag, TimeSpan every, DateTimeOffset now) => new()
        {
            Id = Guid.NewGuid().ToString("N"),
            Device = device,
            Tag = tag,
            CommandName = "report",
            Payload = "{}"u8.ToArray(),
            TtlSeconds = 3600,
            QoS = 1,
            EverySeconds = (long)every.TotalSeconds,
            Anchor = now,
            CreatedAt = now,
            NextDue = now + every,
        };

        public string AddEvery(string? device, TimeSpan every, string? tag = null)
        {
            var schedule = NewSchedule(device, tag, every, Harness.Time.GetUtcNow());
            Assert.Null(Store.TryAdd(schedule, 100, 100));
            return schedule.Id;
        }

        public Task RunAsync() => Runner.RunDueAsync(CancellationToken.None);

        public Task AdvanceAndRunAsync(TimeSpan by)
        {
            Harness.Time.Advance(by);
            return RunAsync();
        }

        /// <summary>The idempotency keys of the device's commands, oldest first.</summary>
        public string[] CommandKeys(string device) =>
            [.. Harness.Store.History(device, null, 500).Select(static c => c.IdempotencyKey ?? "(none)").Reverse()];

        public async ValueTask DisposeAsync()
        {
            Store.Dispose();
            Runner.Dispose();
            await Harness.DisposeAsync();
        }
    }
}
