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
    private readonly List<(Func<ArmedTimer, bool> Match, TaskCompletionSource<ArmedTimer> Armed)> _waiters = [];
    private readonly List<WatchedTimer> _armed = [];
    private int _created;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new WatchedTimer(this, callback, state, Interlocked.Increment(ref _created));
        timer.Inner = base.CreateTimer(static s => ((WatchedTimer)s!).Fire(), timer, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>
    /// The due time of the first armed timer <paramref name="match"/> accepts, armed now or later (bounded
    /// by 30 s): advance the clock by it to fire that timer.
    /// </summary>
    public async Task<TimeSpan> WaitForTimerAsync(Func<TimeSpan, bool> match) =>
        (await WaitForArmedTimerAsync(t => match(t.Requested))).Requested;

    /// <summary>
    /// Like <see cref="WaitForTimerAsync"/>, with the timer's identity, for a test that must tell a timer
    /// armed again from a new one.
    /// </summary>
    public Task<ArmedTimer> WaitForArmedTimerAsync(Func<ArmedTimer, bool> match)
    {
        lock (_gate)
        {
            foreach (var timer in _armed)
            {
                if (match(timer.Snapshot))
                {
                    return Task.FromResult(timer.Snapshot);
                }
            }

            var armed = new TaskCompletionSource<ArmedTimer>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((match, armed));
            return armed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    // Recorded only after the inner timer is scheduled, so a test that advances on the news fires it.
    private void OnArmed(WatchedTimer timer)
    {
        List<TaskCompletionSource<ArmedTimer>> woken = [];
        lock (_gate)
        {
            _armed.Remove(timer);
            if (!timer.IsArmed)
            {
                return;
            }

            _armed.Add(timer);
            foreach (var waiter in _waiters.Where(w => w.Match(timer.Snapshot)).ToList())
            {
                _waiters.Remove(waiter);
                woken.Add(waiter.Armed);
            }
        }

        foreach (var armed in woken)
        {
            armed.TrySetResult(timer.Snapshot);
        }
    }

    private void OnDisarmed(WatchedTimer timer)
    {
        lock (_gate)
        {
            _armed.Remove(timer);
        }
    }

    /// <summary>A timer as armed: its due time and which timer it is (numbered in creation order).</summary>
    public readonly record struct ArmedTimer(TimeSpan Requested, int Id);

    private sealed class WatchedTimer(TimerWatchingFakeTimeProvider provider, TimerCallback callback, object? state, int id) : ITimer
    {
        private volatile bool _armed;

        public ITimer Inner { get; set; } = null!;

        public TimeSpan Requested { get; private set; }

        public bool IsArmed => _armed;

        public ArmedTimer Snapshot => new(Requested, id);

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
