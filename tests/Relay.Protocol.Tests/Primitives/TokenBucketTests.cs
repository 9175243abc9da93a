using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Primitives;

namespace Relay.Protocol.Tests.Primitives;

/// <summary>The one token bucket: burst, continuous refill, waits and give-backs, all on a fake clock.</summary>
public sealed class TokenBucketTests
{
    [Fact]
    public void StartsFull_BurstsItsCapacity_ThenRefuses()
    {
        var bucket = new TokenBucket(3, 1, new FakeTimeProvider());

        Assert.True(bucket.IsFull);
        Assert.True(bucket.TryTake());
        Assert.True(bucket.TryTake());
        Assert.True(bucket.TryTake());
        Assert.False(bucket.TryTake());
        Assert.False(bucket.HasToken);
        Assert.Equal(0, bucket.Available);
    }

    [Fact]
    public void RefillsContinuously_AtTheRate_UpToTheCapacity()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(2, 0.5, time);
        Assert.True(bucket.TryTake());
        Assert.True(bucket.TryTake());

        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(0.5, bucket.Available, 9);
        Assert.False(bucket.TryTake());

        // Exactly one token's worth of time gives that token, whatever the rounding of 0.5 per second.
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(bucket.TryTake());
        Assert.False(bucket.TryTake());

        time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(2, bucket.Available);
        Assert.True(bucket.IsFull);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(1)]
    [InlineData(10)]
    [InlineData(60)]
    public void NPerMinute_GivesOneTokenEvery60OverNSeconds(int perMinute)
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(perMinute, perMinute / 60.0, time);
        for (var i = 0; i < perMinute; i++)
        {
            Assert.True(bucket.TryTake());
        }

        for (var round = 0; round < 5; round++)
        {
            Assert.False(bucket.TryTake());
            time.Advance(TimeSpan.FromSeconds(60.0 / perMinute));
            Assert.True(bucket.TryTake(), $"round {round}");
        }
    }

    [Fact]
    public void RetryAfter_IsTheTimeUntilTheNextToken()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1, 4, time);
        Assert.True(bucket.TryTake(out var none));
        Assert.Equal(TimeSpan.Zero, none);

        time.Advance(TimeSpan.FromMilliseconds(100));
        Assert.False(bucket.TryTake(out var retryAfter));
        Assert.Equal(150, retryAfter.TotalMilliseconds, 3);
    }

    [Fact]
    public void ABucketThatNeverRefills_SaysSo()
    {
        var bucket = new TokenBucket(1, 0, new FakeTimeProvider());
        Assert.True(bucket.TryTake());
        Assert.False(bucket.TryTake(out var retryAfter));
        Assert.Equal(Timeout.InfiniteTimeSpan, retryAfter);
        Assert.False(new TokenBucket(0, 1, new FakeTimeProvider()).TryTake());
    }

    [Fact]
    public void Give_ReturnsAToken_NeverBeyondTheCapacity_AndSpend_NeverBelowEmpty()
    {
        var bucket = new TokenBucket(2, 1, new FakeTimeProvider());
        bucket.Give();
        Assert.Equal(2, bucket.Available);

        Assert.True(bucket.TryTake());
        bucket.Give();
        Assert.Equal(2, bucket.Available);

        bucket.Spend();
        bucket.Spend();
        bucket.Spend();
        Assert.Equal(0, bucket.Available);
        Assert.False(bucket.TryTake());
    }

    [Fact]
    public async Task TakeAsync_WaitsOnTheClock_ForTheNextToken()
    {
        var time = new FakeTimeProvider();
        var bucket = new TokenBucket(1, 2, time);
        await bucket.TakeAsync(CancellationToken.None);

        var second = bucket.TakeAsync(CancellationToken.None).AsTask();
        Assert.False(second.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(499));
        Assert.False(second.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(1));
        await second.WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task TakeAsync_OnABucketThatNeverRefills_Throws()
    {
        var bucket = new TokenBucket(0, 0, new FakeTimeProvider());
        await Assert.ThrowsAsync<InvalidOperationException>(() => bucket.TakeAsync(CancellationToken.None).AsTask());
    }

    [Fact]
    public void NegativeSettings_AreRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenBucket(-1, 1, TimeProvider.System));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenBucket(1, -1, TimeProvider.System));
    }
}
