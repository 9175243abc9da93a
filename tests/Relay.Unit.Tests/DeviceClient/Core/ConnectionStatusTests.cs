using Relay.DeviceClient;
using Relay.DeviceClient.Internal;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>The client's connection state and its "connected" signal, without a connection.</summary>
public sealed class ConnectionStatusTests
{
    [Fact]
    public async Task WaitConnected_CompletesOnConnected_AndWaitsAgainAfterTheConnectionDrops()
    {
        var status = new ConnectionStatus();
        Assert.Equal(DeviceConnectionState.Disconnected, status.Current);
        var first = status.WaitConnectedAsync(CancellationToken.None);

        Assert.True(status.TryMoveTo(DeviceConnectionState.Connecting, out var previous));
        Assert.Equal(DeviceConnectionState.Disconnected, previous);
        Assert.False(first.IsCompleted);
        Assert.False(status.TryMoveTo(DeviceConnectionState.Connecting, out _)); // no change, no event

        Assert.True(status.TryMoveTo(DeviceConnectionState.Connected, out _));
        await first.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(status.WaitConnectedAsync(CancellationToken.None).IsCompletedSuccessfully);

        Assert.True(status.TryMoveTo(DeviceConnectionState.Disconnected, out previous));
        Assert.Equal(DeviceConnectionState.Connected, previous);
        var second = status.WaitConnectedAsync(CancellationToken.None);
        Assert.False(second.IsCompleted);
        status.TryMoveTo(DeviceConnectionState.Connected, out _);
        await second.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Stopped_IsFinal_AndFailsWaiters()
    {
        var status = new ConnectionStatus();
        var waiting = status.WaitConnectedAsync(CancellationToken.None);

        Assert.True(status.TryMoveTo(DeviceConnectionState.Stopped, out _));

        await Assert.ThrowsAsync<InvalidOperationException>(() => waiting);
        await Assert.ThrowsAsync<InvalidOperationException>(() => status.WaitConnectedAsync(CancellationToken.None));
        Assert.False(status.TryMoveTo(DeviceConnectionState.Connected, out var previous));
        Assert.Equal(DeviceConnectionState.Stopped, previous);
        Assert.Equal(DeviceConnectionState.Stopped, status.Current);
    }
}
