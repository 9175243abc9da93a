using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Events;

namespace Relay.Server.Tests.Events;

public sealed class RelayEventHubTests
{
    private static RelayEventHub NewHub(int maxSubscribers = 8, int queue = 16) =>
        new(
            Options.Create(new EventsOptions { MaxSubscribers = maxSubscribers, SubscriberQueueLength = queue }),
            TestMeters.NewFactory(),
            new FakeTimeProvider(),
            NullLogger<RelayEventHub>.Instance);

    private static RelayEvent Event(RelayEventKind kind, string? device = "d1", string json = "{}") =>
        new(kind, device, DateTimeOffset.UnixEpoch, Encoding.UTF8.GetBytes(json));

    [Fact]
    public void Subscribers_GetTheKindsAndDevicesTheyAskedFor_InOrder()
    {
        var hub = NewHub();
        using var telemetry = hub.Subscribe([RelayEventKind.Telemetry])!;
        using var d2 = hub.Subscribe([RelayEventKind.Telemetry, RelayEventKind.Presence], e => e.DeviceId == "d2")!;

        var first = Event(RelayEventKind.Telemetry, "d1", """{"n":1}""");
        var second = Event(RelayEventKind.Telemetry, "d2", """{"n":2}""");
        var presence = Event(RelayEventKind.Presence, "d2");
        hub.Publish(first);
        hub.Publish(second);
        hub.Publish(presence);
        hub.Publish(Event(RelayEventKind.Command, "d2"));

        Assert.True(telemetry.Reader.TryRead(out var a));
        Assert.True(telemetry.Reader.TryRead(out var b));
        Assert.False(telemetry.Reader.TryRead(out _));
        Assert.Same(first, a);
        Assert.Same(second, b);

        Assert.True(d2.Reader.TryRead(out var c));
        Assert.True(d2.Reader.TryRead(out var d));
        Assert.False(d2.Reader.TryRead(out _));
        Assert.Same(second, c);
        Assert.Same(presence, d);
    }

    [Fact]
    public void HasSubscribers_FollowsSubscribeAndDispose_PerKind()
    {
        var hub = NewHub();
        Assert.False(hub.HasSubscribers(RelayEventKind.Telemetry));
        var first = hub.Subscribe([RelayEventKind.Telemetry])!;
        var second = hub.Subscribe([RelayEventKind.Telemetry, RelayEventKind.Rule])!;
        Assert.True(hub.HasSubscribers(RelayEventKind.Telemetry));
        Assert.True(hub.HasSubscribers(RelayEventKind.Rule));
        Assert.False(hub.HasSubscribers(RelayEventKind.Presence));

        first.Dispose();
        Assert.True(hub.HasSubscribers(RelayEventKind.Telemetry));
        second.Dispose();
        second.Dispose();
        Assert.False(hub.HasSubscribers(RelayEventKind.Telemetry));
        Assert.False(hub.HasSubscribers(RelayEventKind.Rule));
        Assert.Equal(0, hub.SubscriberCount);
    }

    [Fact]
    public async Task ASubscriberThatFallsBehind_IsCutOff_AndTheOthersKeepTheirEvents()
    {
        const int queue = 16;
        var hub = NewHub(queue: queue);
        using var slow = hub.Subscribe([RelayEventKind.Telemetry])!;
        using var fast = hub.Subscribe([RelayEventKind.Telemetry])!;

        var received = 0;
        for (var i = 0; i < queue * 4; i++)
        {
            hub.Publish(Event(RelayEventKind.Telemetry));
            while (fast.Reader.TryRead(out _))
            {
                received++;
            }
        }

        Assert.Equal(queue * 4, received);
        Assert.True(slow.CutOff);
        Assert.False(fast.CutOff);
        Assert.Equal(1, hub.SubscriberCount);

        // The slow reader gets what was queued before the cut, then the end of its stream.
        var queued = 0;
        await foreach (var _ in slow.Reader.ReadAllAsync())
        {
            queued++;
        }

        Assert.Equal(queue, queued);
    }

    [Fact]
    public void SubscribersPastTheMaximum_AreRefused_UntilOneLeaves()
    {
        var hub = NewHub(maxSubscribers: 2);
        var first = hub.Subscribe([RelayEventKind.Presence]);
        var second = hub.Subscribe([RelayEventKind.Presence]);
        Assert.NotNull(first);
        Assert.NotNull(second);
        Assert.Null(hub.Subscribe([RelayEventKind.Presence]));

        first!.Dispose();
        using var third = hub.Subscribe([RelayEventKind.Presence]);
        Assert.NotNull(third);
        second!.Dispose();
    }

    [Fact]
    public void Options_OutOfRange_AreReported()
    {
        var errors = new List<string>();
        new EventsOptions { MaxSubscribers = 0, SubscriberQueueLength = 1 }.Validate(errors);
        Assert.Equal(2, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("Relay:Events:MaxSubscribers", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Relay:Events:SubscriberQueueLength", StringComparison.Ordinal));
    }
}
