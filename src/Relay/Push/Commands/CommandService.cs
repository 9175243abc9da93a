using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Push.Commands;

/// <summary>Why an enqueue, cancel or wait did not happen; the HTTP layer maps each to a status.</summary>
internal enum CommandError
{
    None,
    UnknownDevice,
    UnknownCommand,
    TooManyQueued,
    TooManyWaiters,
    NotCancelable,

    /// <summary>The command loop is too far behind to take the request now.</summary>
    Busy,

    /// <summary>The sending token's commands would hold more than Relay:Push:MaxQueuedBytesPerToken.</summary>
    QuotaExceeded,

    /// <summary>More devices carry a broadcast's tag than Relay:Push:MaxBroadcastDevices.</summary>
    TooManyDevices,
}

/// <summary>
/// A validated command request. <paramref name="Token"/> is the id of the API token sending it, whose
/// Relay:Push:MaxQueuedBytesPerToken the command counts against; null counts against nobody. With
/// <paramref name="NotBefore"/> the command is held (queued) until then, and its TTL counts from then. With
/// <paramref name="IdempotencyKey"/>, a device that has a command with that key already gets no second one:
/// the stored one is returned instead.
/// </summary>
internal sealed record CommandRequest(string Name, byte[] Payload, bool Binary, int TtlSeconds, byte QoS, string? Token = null)
{
    public DateTimeOffset? NotBefore { get; init; }

    public string? IdempotencyKey { get; init; }
}

/// <summary>
/// The push API's view of the command lifecycle (docs/push.md): enqueue to a device or to every device with
/// a tag, read a command and a device's history, cancel, wait for a final state. Holds no state: reads go
/// to the <see cref="CommandStore"/>, everything that changes a command to the <see cref="CommandLoop"/>.
/// </summary>
internal sealed class CommandService(CommandLoop loop, CommandStore store, IDeviceRegistry registry, PushOptions options, PushLimitHits limitHits)
{
    private const int RegistryPageSize = 500;

    public PushOptions Options => options;

    /// <summary>Stores a command (durable when this returns) and starts its delivery.</summary>
    public async Task<(CommandEntry? Entry, CommandError Error)> EnqueueAsync(string device, CommandRequest request, CancellationToken cancellationToken)
    {
        if (await registry.FindAsync(device, cancellationToken).ConfigureAwait(false) is null)
        {
            return (null, CommandError.UnknownDevice);
        }

        var (entries, overQuota) = await loop.EnqueueAsync([device], request, cancellationToken).ConfigureAwait(false);
        return entries.Count == 1 ? (entries[0], CommandError.None) : (null, overQuota ? CommandError.QuotaExceeded : CommandError.TooManyQueued);
    }

    /// <summary>
    /// One command per device carrying <paramref name="tag"/> (one transaction). Devices whose queue is
    /// full are skipped and returned in Skipped. Error TooManyDevices when more devices than
    /// MaxBroadcastDevices carry the tag; QuotaExceeded (nothing stored) when the commands would pass the
    /// token's Relay:Push:MaxQueuedBytesPerToken.
    /// </summary>
    public async Task<(List<CommandEntry> Commands, List<string> Skipped, CommandError Error)> BroadcastAsync(string tag, CommandRequest request, CancellationToken cancellationToken)
    {
        var devices = new List<string>();
        string? after = null;
        while (true)
        {
            var page = await registry.ListAsync(tag, after, RegistryPageSize, cancellationToken).ConfigureAwait(false);
            devices.AddRange(page.Select(static d => d.Id));
            if (devices.Count > options.MaxBroadcastDevices)
            {
                limitHits.Record(PushLimit.BroadcastDevices, tag);
                return ([], [], CommandError.TooManyDevices);
            }

            if (page.Count < RegistryPageSize)
            {
                break;
            }

            after = page[^1].Id;
        }

        var (commands, overQuota) = await loop.EnqueueAsync(devices, request, cancellationToken).ConfigureAwait(false);
        if (overQuota)
        {
            return ([], [], CommandError.QuotaExceeded);
        }

        var skipped = devices.Except(commands.Select(static c => c.Device), StringComparer.Ordinal).ToList();
        return (commands, skipped, CommandError.None);
    }

    /// <summary>The stored command and its transitions; null when unknown.</summary>
    public (CommandEntry Entry, List<StoredTransition> Transitions)? Get(string id) => store.Find(id);

    /// <summary>A device's commands, newest first, a page after <paramref name="after"/>.</summary>
    public List<CommandEntry> History(string device, string? after, int limit) => store.History(device, after, limit);

    /// <summary>Cancels a command that has not gone out to its device yet.</summary>
    public Task<CommandError> CancelAsync(string id, CancellationToken cancellationToken) => loop.CancelAsync(id, cancellationToken);

    /// <summary>A deleted device's commands end (queued: canceled, delivered: expired); returns how many, once stored.</summary>
    public Task<int> EndCommandsOfAsync(string device, CancellationToken cancellationToken) => loop.EndCommandsOfAsync(device, cancellationToken);

    /// <summary>Waits until the command is final or <paramref name="timeout"/> passes; TooManyWaiters when Relay:Push:MaxWaiters wait already.</summary>
    public Task<CommandError> WaitForFinalAsync(string id, TimeSpan timeout, CancellationToken cancellationToken) => loop.WaitForFinalAsync(id, timeout, cancellationToken);
}
