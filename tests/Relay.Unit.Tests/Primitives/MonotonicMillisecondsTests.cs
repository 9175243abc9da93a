using Microsoft.Extensions.Time.Testing;
using Relay.Server.Primitives;

namespace Relay.Server.Tests.Primitives;

public sealed class MonotonicMillisecondsTests
{
    [Fact]
    public void FollowsTheClock_NotTheMachine()
    {
        var time = new FakeTimeProvider();
        var start = time.GetMonotonicMilliseconds();
        Assert.Equal(start, time.GetMonotonicMilliseconds());
        time.Advance(TimeSpan.FromMilliseconds(1500.4));
        Assert.Equal(start + 1500, time.GetMonotonicMilliseconds());
    }

    [Fact]
    public void OnTheSystemClock_TicksInMilliseconds()
    {
        var before = TimeProvider.System.GetMonotonicMilliseconds();
        var stamp = TimeProvider.System.GetTimestamp();
        var after = TimeProvider.System.GetMonotonicMilliseconds();
        Assert.InRange(after - before, 0, 1000);
        Assert.InRange(stamp / (double)TimeProvider.System.TimestampFrequency * 1000, before - 1, after + 1);
    }
}
