namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>
/// A TimeProvider whose clock and timers move only when the test says so (Microsoft.Extensions.TimeProvider.Testing
/// is not available). Tests wait for a timer to be armed (an event, not a sleep), then advance.
/// </summary>
internal sealed class FakeClock(DateTimeOffset start) : TimeProvider
{
    private readonly Lock _gate = new();
    private readonly List<FakeTimer> _timers = [];
    private readonly List<(Func<FakeTimer, bool> Match, TaskCompletionSource<FakeTimer> Done)> _waiters = [];
    private DateTimeOffset _now = start;
    private long _ticks;

    public override DateTimeOffset GetUtcNow()
    {
        lock (_gate)
        {
            return _now;
        }
    }

    public override long GetTimestamp()
    {
        lock (_gate)
        {
            return _ticks;
        }
    }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new FakeTimer(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Waits until an armed timer matches (already armed, or armed later).</summary>
    public Task<FakeTimer> WaitForTimerAsync(Func<FakeTimer, bool> match)
    {
        lock (_gate)
        {
            var armed = _timers.FirstOrDefault(match);
            if (armed is not null)
            {
                return Task.FromResult(armed);
            }

            var done = new TaskCompletionSource<FakeTimer>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((match, done));
            return done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    public void Advance(TimeSpan by)
    {
        List<FakeTimer> due;
        lock (_gate)
        {
            _now += by;
            _ticks += by.Ticks;
            due = [.. _timers.Where(t => t.DueAt <= _ticks).OrderBy(static t => t.DueAt)];
            foreach (var t in due)
            {
                _timers.Remove(t);
            }
        }

        foreach (var t in due)
        {
            t.Fire();
        }
    }

    internal void Arm(FakeTimer timer)
    {
        List<TaskCompletionSource<FakeTimer>> wake = [];
        lock (_gate)
        {
            _timers.Remove(timer);
            if (timer.Requested == Timeout.InfiniteTimeSpan)
            {
                return;
            }

            timer.DueAt = _ticks + timer.Requested.Ticks;
            _timers.Add(timer);
            foreach (var w in _waiters.Where(w => w.Match(timer)).ToList())
            {
                _waiters.Remove(w);
                wake.Add(w.Done);
            }
        }

        foreach (var w in wake)
        {
            w.TrySetResult(timer);
        }
    }

    internal void Disarm(FakeTimer timer)
    {
        lock (_gate)
        {
            _timers.Remove(timer);
        }
    }

    internal sealed class FakeTimer(FakeClock clock, TimerCallback callback, object? state) : ITimer
    {
        public TimeSpan Requested { get; private set; }

        public long DueAt { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            Requested = dueTime;
            clock.Arm(this);
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose()
        {
            Requested = Timeout.InfiniteTimeSpan;
            clock.Disarm(this);
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
