using Relay.DeviceClient.Internal;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>The client's keep-alive (MQTT §3.1.2.10) on a fake clock, without a connection.</summary>
public sealed class MqttKeepAliveTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(7);

    [Fact]
    public async Task Mqtt_3_1_2_10_PingsEveryInterval_AndAMissingPingResp_MeansTheConnectionIsDead()
    {
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var keepAlive = new MqttKeepAlive(Interval, Timeout, clock);
        var pings = 0;
        using var closed = new CancellationTokenSource();
        var run = keepAlive.RunAsync(
            _ =>
            {
                Interlocked.Increment(ref pings);
                return ValueTask.CompletedTask;
            },
            closed.Token);

        // First round: the PINGRESP comes in time, and the next interval starts.
        clock.Advance(await clock.WaitForTimerAsync(static due => due == Interval));
        await clock.WaitForTimerAsync(static due => due == Timeout);
        Assert.Equal(1, Volatile.Read(ref pings));
        keepAlive.OnPingResponse();
        clock.Advance(await clock.WaitForTimerAsync(static due => due == Interval));

        // Second round: none comes.
        clock.Advance(await clock.WaitForTimerAsync(static due => due == Timeout));

        Assert.Equal("No PINGRESP within OperationTimeout (00:00:07): the connection is dead.", await run.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(2, Volatile.Read(ref pings));
        Assert.False(run.IsFaulted);
    }

    [Fact]
    public async Task AClosedConnection_EndsIt_WithoutAVerdict()
    {
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var keepAlive = new MqttKeepAlive(Interval, Timeout, clock);
        using var closed = new CancellationTokenSource();
        var run = keepAlive.RunAsync(_ => ValueTask.CompletedTask, closed.Token);
        clock.Advance(await clock.WaitForTimerAsync(static due => due == Interval));
        await clock.WaitForTimerAsync(static due => due == Timeout);

        await closed.CancelAsync();

        Assert.Null(await run.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task AFailedPing_EndsIt_WithoutAVerdict_AndAZeroIntervalNeverPings()
    {
        var clock = new TimerWatchingFakeTimeProvider(DateTimeOffset.UnixEpoch);
        var run = new MqttKeepAlive(Interval, Timeout, clock).RunAsync(_ => ValueTask.FromException(new IOException("reset")), CancellationToken.None);
        clock.Advance(await clock.WaitForTimerAsync(static due => due == Interval));
        Assert.Null(await run.WaitAsync(TimeSpan.FromSeconds(10)));

        var pinged = false;
        var off = new MqttKeepAlive(TimeSpan.Zero, Timeout, clock).RunAsync(
            _ =>
            {
                pinged = true;
                return ValueTask.CompletedTask;
            },
            CancellationToken.None);
        Assert.True(off.IsCompletedSuccessfully);
        Assert.Null(await off);
        Assert.False(pinged);
    }
}
