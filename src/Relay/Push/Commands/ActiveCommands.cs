using System.Diagnostics.CodeAnalysis;

namespace Relay.Server.Push.Commands;

/// <summary>
/// The commands that are not final yet, in memory: by id, and per device a <see cref="DeviceCommandQueue"/>.
/// Every state change goes through <see cref="Move"/>, which holds it to <see cref="CommandLifecycle"/>.
/// Not thread-safe: <see cref="CommandLoop"/> owns the one instance and uses it only on its loop (and
/// at start, before the loop runs).
/// </summary>
internal sealed class ActiveCommands
{
    private readonly Dictionary<string, CommandEntry> _byId = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DeviceCommandQueue> _devices = new(StringComparer.Ordinal);

    public int Count => _byId.Count;

    /// <summary>Every command not final yet (the sweep's scan).</summary>
    public Dictionary<string, CommandEntry>.ValueCollection All => _byId.Values;

    /// <summary>Takes in the commands the store holds as not final (at start), the queued ones into their device's queue.</summary>
    public void Load(IEnumerable<CommandEntry> entries)
    {
        foreach (var entry in entries)
        {
            _byId[entry.Id] = entry;
            if (entry.State == CommandState.Queued)
            {
                QueueFor(entry.Device).Add(entry);
            }
        }
    }

    public bool Contains(string id) => _byId.ContainsKey(id);

    public bool TryGet(string id, [MaybeNullWhen(false)] out CommandEntry entry) => _byId.TryGetValue(id, out entry);

    /// <summary>The device's queue, or null when it has nothing queued or reserved.</summary>
    public DeviceCommandQueue? QueueOf(string device) => _devices.GetValueOrDefault(device);

    /// <summary>
    /// Holds a place in the device's queue for a command about to be stored, so enqueues being stored at
    /// the same time cannot overshoot <paramref name="limit"/>; false when the queue is full.
    /// </summary>
    public bool TryReserve(string device, int limit)
    {
        var queue = QueueFor(device);
        if (!queue.HasRoom(limit))
        {
            return false;
        }

        queue.Reserve();
        return true;
    }

    /// <summary>The store refused the command a place was held for.</summary>
    public void Unreserve(string device) => QueueFor(device).Unreserve();

    /// <summary>A stored command takes the place held for it.</summary>
    public void Admit(CommandEntry entry)
    {
        var queue = QueueFor(entry.Device);
        queue.Unreserve();
        queue.Add(entry);
        _byId[entry.Id] = entry;
    }

    /// <summary>Whether the command is with its device's connection, awaiting the acknowledgement.</summary>
    public bool IsHandedOver(CommandEntry entry) => QueueOf(entry.Device)?.IsHandedOver(entry) == true;

    /// <summary>
    /// Moves the command to <paramref name="to"/>, which <see cref="CommandLifecycle.IsLegal"/> must allow:
    /// every step leaves the queued state, so the command leaves its device's queue.
    /// </summary>
    public void Move(CommandEntry entry, CommandState to)
    {
        if (!CommandLifecycle.IsLegal(entry.State, to))
        {
            throw new InvalidOperationException($"Command {entry.Id}: {entry.State} → {to} is not a step of its lifecycle.");
        }

        QueueOf(entry.Device)?.Remove(entry);
        entry.State = to;
    }

    /// <summary>
    /// Undoes a <see cref="Move"/> whose commit failed: the command is back in <paramref name="previous"/>,
    /// and back in its device's queue when that is queued, so the next trigger or sweep tries again.
    /// </summary>
    public void Restore(CommandEntry entry, CommandState previous)
    {
        entry.State = previous;
        if (previous == CommandState.Queued && _byId.ContainsKey(entry.Id))
        {
            var queue = QueueFor(entry.Device);
            if (!queue.Contains(entry))
            {
                queue.Add(entry);
            }
        }
    }

    /// <summary>A final command's transition is stored: it leaves memory.</summary>
    public void Retire(CommandEntry entry) => _byId.Remove(entry.Id);

    /// <summary>Drops the queues of devices with nothing queued or reserved.</summary>
    public void RemoveIdleQueues()
    {
        foreach (var (device, queue) in _devices)
        {
            if (queue.IsIdle)
            {
                _devices.Remove(device);
            }
        }
    }

    /// <summary>Adds to <paramref name="devices"/> every device with a queued command not yet with its connection.</summary>
    public void CollectUnsent(List<string> devices)
    {
        foreach (var (device, queue) in _devices)
        {
            if (queue.HasUnsent)
            {
                devices.Add(device);
            }
        }
    }

    private DeviceCommandQueue QueueFor(string device)
    {
        if (!_devices.TryGetValue(device, out var queue))
        {
            _devices[device] = queue = new DeviceCommandQueue();
        }

        return queue;
    }
}
