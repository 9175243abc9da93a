using Relay.Server.Devices;

namespace Relay.Server.Push.Commands;

/// <summary>
/// What one batch of the <see cref="CommandLoop"/> did, kept until its commit: the steps to store, the
/// cancels and results that wait for it, the presence changes to announce. The loop's own scratch: one
/// instance, cleared per batch.
/// </summary>
internal sealed class CommandBatch
{
    public List<CommandChange> Changes { get; } = [];

    /// <summary>Each cancel with its outcome and, when it took a step, that step's index in <see cref="Changes"/> (else -1).</summary>
    public List<(CancelRequested Request, CommandError Outcome, int Change)> Cancels { get; } = [];

    public List<DevicePresence> Presence { get; } = [];

    /// <summary>Each device removal with the number of commands it ended, answered after the commit.</summary>
    public List<(DeviceRemoved Request, int Ended)> Removals { get; } = [];

    public List<ResultArrival> Results { get; } = [];

    /// <summary>Waiters of commands made final by this batch, woken after the commit.</summary>
    public List<TaskCompletionSource<CommandError>> Wake { get; } = [];

    /// <summary>The sweep's list of devices to retry.</summary>
    public List<string> Retry { get; } = [];

    public void Clear()
    {
        Changes.Clear();
        Cancels.Clear();
        Presence.Clear();
        Removals.Clear();
        Results.Clear();
        Wake.Clear();
        Retry.Clear();
    }
}

/// <summary>One step of one command: stored with its batch, undone in memory if the commit fails.</summary>
internal readonly record struct CommandChange(CommandEntry Entry, CommandState State, CommandState Previous, DateTimeOffset At, string? Result);
