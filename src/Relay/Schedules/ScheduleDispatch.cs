using Relay.Server.Push.Commands;

namespace Relay.Server.Schedules;

/// <summary>What one run stored: how many commands, devices left out (queue full), or why it stored none.</summary>
internal readonly record struct DispatchResult(int Commands, int DevicesSkipped, ScheduleFailure? Failure);

/// <summary>
/// How a run sends its commands: through the command lifecycle, as any API request does. Throws on a fault
/// that may pass (the store failing, the command loop stopped): the runner keeps the run pending and
/// retries it; the key makes the retry store nothing twice.
/// </summary>
internal interface IScheduleDispatch
{
    Task<DispatchResult> SendAsync(Schedule schedule, string idempotencyKey, CancellationToken cancellationToken);
}

/// <summary>Sends a run's commands with <see cref="CommandService"/>: to the schedule's device, or to every device with its tag.</summary>
internal sealed class CommandDispatch(CommandService commands) : IScheduleDispatch
{
    public async Task<DispatchResult> SendAsync(Schedule schedule, string idempotencyKey, CancellationToken cancellationToken)
    {
        var request = new CommandRequest(schedule.CommandName, schedule.Payload, schedule.Binary, schedule.TtlSeconds, schedule.QoS, schedule.Token)
        {
            IdempotencyKey = idempotencyKey,
        };
        if (schedule.Device is { } device)
        {
            var (entry, error) = await commands.EnqueueAsync(device, request, cancellationToken).ConfigureAwait(false);
            return entry is not null ? new DispatchResult(1, 0, null) : new DispatchResult(0, 0, Failure(error));
        }

        var (sent, skipped, failure) = await commands.BroadcastAsync(schedule.Tag!, request, cancellationToken).ConfigureAwait(false);
        return failure == CommandError.None ? new DispatchResult(sent.Count, skipped.Count, null) : new DispatchResult(0, 0, Failure(failure));
    }

    private static ScheduleFailure Failure(CommandError error) => error switch
    {
        CommandError.UnknownDevice => ScheduleFailure.UnknownDevice,
        CommandError.TooManyQueued => ScheduleFailure.QueueFull,
        CommandError.QuotaExceeded => ScheduleFailure.Quota,
        CommandError.TooManyDevices => ScheduleFailure.TooManyDevices,
        _ => ScheduleFailure.Error,
    };
}
