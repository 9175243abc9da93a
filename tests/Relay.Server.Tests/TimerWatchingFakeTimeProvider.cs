using Microsoft.Extensions.Time.Testing;

namespace Relay.Server.Tests;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that also tells a test when the code under test arms a timer (a
/// <c>Task.Delay</c>, a timeout, a timer) and for how long, so the test advances on that event instead of
/// sleeping or guessing. Time and timers are the fake provider's own; this only watches them.
/// </summary>
internal sealed class TimerWatchingFakeTimeProvider(DateTimeOffset start) : FakeTimeProvider(start)
{
    private readonly Lock _gate = new();
    private readonly List<(Func<TimeSpan, bool> Match, TaskCompletionSource<TimeSpan> Armed)> _waiters = [];
    private readonly List<WatchedTimer> _armed = [];

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new WatchedTimer(this, callback, state);
        timer.Inner = base.CreateTimer(static s => ((WatchedTimer)s!).Fire(), timer, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>
    /// The due time of the first armed timer <paramref name="match"/> accepts, armed now or later (bounded
    /// by 30 s): advance the clock by it to fire that timer.
    /// </summary>
    public Task<TimeSpan> WaitForTimerAsync(Func<TimeSpan, bool> match)
    {
        lock (_gate)
        {
            foreach (var timer in _armed)
            {
                if (match(timer.Requested))
                {
                    return Task.FromResult(timer.Requested);
                }
            }

            var armed = new TaskCompletionSource<TimeSpan>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((match, armed));
            return armed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    // Recorded only after the inner timer is scheduled, so a test that advances on the news fires it.
    private void OnArmed(WatchedTimer timer)
    {
        List<TaskCompletionSource<TimeSpan>> woken = [];
        lock (_gate)
        {
            _armed.Remove(timer);
            if (!timer.IsArmed)
            {
                return;
            }

            _armed.Add(timer);
            foreach (var waiter in _waiters.Where(w => w.Match(timer.Requested)).ToList())
            {
                _waiters.Remove(waiter);
                woken.Add(waiter.Armed);
            }
        }

        foreach (var armed in woken)
        {
            armed.TrySetResult(timer.Requested);
        }
    }

    private void OnDisarmed(WatchedTimer timer)
    {
        lock (_gate)
        {
            _armed.Remove(timer);
        }
    }

    private sealed class WatchedTimer(TimerWatchingFakeTimeProvider provider, TimerCallback callback, object? state) : ITimer
    {
        private volatile bool _armed;

        public ITimer Inner { get; set; } = null!;

        public TimeSpan Requested { get; private set; }

        public bool IsArmed => _armed;

        private TimeSpan Period { get; set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            Requested = dueTime;
            Period = period;
            _armed = dueTime != Timeout.InfiniteTimeSpan;
            var changed = Inner.Change(dueTime, period);
            provider.OnArmed(this);
            return changed;
        }

        public void Fire()
        {
            if (Period == Timeout.InfiniteTimeSpan || Period == TimeSpan.Zero)
            {
                _armed = false;
                provider.OnDisarmed(this);
            }

            callback(state);
        }

        public void Dispose()
        {
            _armed = false;
            provider.OnDisarmed(this);
            Inner.Dispose();
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
