using Relay.Server.Devices;

namespace Relay.Server.Push.Commands;

/// <summary>
/// What the <see cref="CommandLoop"/> handles, in posting order. From the broker (through
/// <see cref="CommandMqttObserver"/>): presence, subscriptions, acknowledgements, results. From request
/// threads: enqueues, cancels, waits, each carrying what its caller awaits. From the loop's timer: the sweep.
/// </summary>
internal abstract record CommandEvent;

/// <summary>The device connected: announce its presence, send what is queued for it.</summary>
internal sealed record DeviceConnected(DevicePresence Presence) : CommandEvent;

/// <summary>The device's connection ended: announce it; what its connection held goes again next time.</summary>
internal sealed record DeviceDisconnected(DevicePresence Presence) : CommandEvent;

/// <summary>The device subscribed with a filter matching its commands topic: send what is queued.</summary>
internal sealed record DeliveryRequested(string Device) : CommandEvent;

/// <summary>The device acknowledged the PUBLISH of <paramref name="Entry"/> (the tag given to the broker).</summary>
internal sealed record DeliveryAcknowledged(CommandEntry Entry) : CommandEvent;

/// <summary>The device published to its results topic; its PUBACK waits for <paramref name="Arrival"/> to be settled.</summary>
internal sealed record ResultReceived(string Device, ResultArrival Arrival) : CommandEvent;

/// <summary>
/// An enqueue asks for a place in each device's queue, and for <paramref name="CostPerCommand"/> bytes per
/// place from <paramref name="Token"/>'s quota (none when null); the answer lists the devices that got one.
/// </summary>
internal sealed record PlacesRequested(IReadOnlyList<string> Devices, string? Token, long CostPerCommand) : CommandEvent
{
    public TaskCompletionSource<PlacesGranted> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>The devices that got a place; none, and <paramref name="OverQuota"/>, when the token's bytes would pass its quota.</summary>
internal sealed record PlacesGranted(IReadOnlyList<string> Devices, bool OverQuota);

/// <summary>The commands given places are stored (their queued transition too): they take their places.</summary>
internal sealed record CommandsStored(IReadOnlyList<CommandEntry> Entries) : CommandEvent;

/// <summary>Storing failed: the places held for these devices, and the bytes counted against the token, are free again.</summary>
internal sealed record PlacesReleased(IReadOnlyList<string> Devices, string? Token, long Bytes) : CommandEvent;

/// <summary>An operator cancels command <paramref name="Id"/>.</summary>
internal sealed record CancelRequested(string Id) : CommandEvent
{
    public TaskCompletionSource<CommandError> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>
/// An operator deleted device <paramref name="Device"/> (review L9): its commands end, so none reaches a device
/// registered again under the id. The answer is how many ended, once that is stored.
/// </summary>
internal sealed record DeviceRemoved(string Device) : CommandEvent
{
    public TaskCompletionSource<int> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>
/// A request waits for command <paramref name="Id"/> to become final. <see cref="Waiter"/> completes with
/// None when it is (or is not active at all), with TooManyWaiters when Relay:Push:MaxWaiters wait already.
/// </summary>
internal sealed record WaitRequested(string Id) : CommandEvent
{
    public TaskCompletionSource<CommandError> Waiter { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>The waiter of <paramref name="Request"/> stopped waiting (time up, or its request went away).</summary>
internal sealed record WaitEnded(WaitRequested Request) : CommandEvent;

/// <summary>The timer's tick: expire what is past its TTL, retry delivery to online devices.</summary>
internal sealed record SweepDue : CommandEvent
{
    public static SweepDue Instance { get; } = new();
}

/// <summary>A device's result on its way to the store; the device's PUBACK waits for <see cref="Settled"/>.</summary>
internal sealed class ResultArrival(ReadOnlyMemory<byte> payload)
{
    private readonly TaskCompletionSource<bool> _settled = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The message's own copy of the payload.</summary>
    public ReadOnlyMemory<byte> Payload { get; } = payload;

    /// <summary>
    /// True once what the result changed is committed (or it needed no write); false when the commit
    /// failed or the loop stopped before handling it.
    /// </summary>
    public Task<bool> Settled => _settled.Task;

    public void Settle(bool stored) => _settled.TrySetResult(stored);
}
