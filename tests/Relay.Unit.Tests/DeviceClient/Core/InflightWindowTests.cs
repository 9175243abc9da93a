using Relay.DeviceClient.Internal;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>The client's QoS 1 send window and packet identifiers, without a connection.</summary>
public sealed class InflightWindowTests
{
    private static OutgoingMessage Message(string topic = "t", bool transient = false) =>
        new("t"u8.ToArray(), System.Text.Encoding.UTF8.GetBytes(topic), 1, false, null, null) { Transient = transient };

    [Fact]
    public async Task Mqtt_2_2_1_3_PacketIds_AreNonZero_AndNotReusedWhileInFlight_AcrossTheWrap()
    {
        var window = new InflightWindow(4);
        var first = await window.AddAsync(Message(), waitForAck: false, CancellationToken.None);
        Assert.Equal(1, first.PacketId);

        // Cycle the counter to just before the wrap while packet 1 stays unacknowledged.
        for (var i = 2; i < ushort.MaxValue; i++)
        {
            var m = await window.AddAsync(Message(), waitForAck: false, CancellationToken.None);
            Assert.Equal(i, m.PacketId);
            Assert.Same(m, window.Acknowledge(m.PacketId));
        }

        var last = await window.AddAsync(Message(), waitForAck: false, CancellationToken.None);
        Assert.Equal(ushort.MaxValue, last.PacketId);

        // 65,535 goes round to 1, which is still in flight: skipped, never 0.
        var wrapped = await window.AddAsync(Message(), waitForAck: false, CancellationToken.None);
        Assert.Equal(2, wrapped.PacketId);
    }

    [Fact]
    public async Task ReservedSubscribeId_IsNotGivenToAPublish_UntilReleased()
    {
        var window = new InflightWindow(4);
        var reserved = window.Reserve();
        Assert.Equal(1, reserved);
        var publish = await window.AddAsync(Message(), waitForAck: false, CancellationToken.None);
        Assert.Equal(2, publish.PacketId);
        window.ReleaseReserved();
        Assert.Same(publish, window.Acknowledge(2));

        // Round the whole space: 1 is free again after the release.
        ushort id = 0;
        for (var i = 0; i < ushort.MaxValue - 1; i++)
        {
            var m = await window.AddAsync(Message(), waitForAck: false, CancellationToken.None);
            id = m.PacketId;
            window.Acknowledge(id);
        }

        Assert.Equal(1, id);
    }

    [Fact]
    public async Task AFullWindow_WaitsForAPuback_ThenGivesTheSlotToTheNextMessage()
    {
        var window = new InflightWindow(2);
        var a = await window.AddAsync(Message("a"), waitForAck: true, CancellationToken.None);
        await window.AddAsync(Message("b"), waitForAck: false, CancellationToken.None);

        var third = window.AddAsync(Message("c"), waitForAck: false, CancellationToken.None).AsTask();
        Assert.False(third.IsCompleted);
        using (var canceled = new CancellationTokenSource())
        {
            await canceled.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => window.AddAsync(Message("d"), false, canceled.Token).AsTask());
        }

        Assert.Null(window.Acknowledge(999)); // an unknown id frees nothing
        Assert.False(third.IsCompleted);
        Assert.Same(a, window.Acknowledge(a.PacketId));
        var c = await third.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, window.Count);
        Assert.Equal("c", System.Text.Encoding.UTF8.GetString(c.Message.Payload));
        Assert.NotNull(a.Done);
    }

    [Fact]
    public async Task Mqtt_4_6_TakeResends_KeepsSendOrder_AndDropsTransientMessages_FailingTheirWaiters()
    {
        var window = new InflightWindow(8);
        var first = await window.AddAsync(Message("1"), waitForAck: false, CancellationToken.None);
        var signalling = await window.AddAsync(Message("signal", transient: true), waitForAck: true, CancellationToken.None);
        var second = await window.AddAsync(Message("2"), waitForAck: false, CancellationToken.None);
        var third = await window.AddAsync(Message("3"), waitForAck: false, CancellationToken.None);
        window.Acknowledge(second.PacketId);

        var resends = window.TakeResends();

        Assert.Equal([first.PacketId, third.PacketId], resends.Select(static r => r.PacketId));
        await Assert.ThrowsAsync<IOException>(() => signalling.Done!.Task);
        Assert.Equal(2, window.Count);
        Assert.Null(window.Acknowledge(signalling.PacketId));

        // What stays is still in flight: a second reconnect resends it again, and the snapshot for the journal has it.
        Assert.Equal([first.PacketId, third.PacketId], window.TakeResends().Select(static r => r.PacketId));
        Assert.Equal([first.PacketId, third.PacketId], window.Snapshot().Select(static r => r.PacketId).Order());
    }
}
