using System.Diagnostics.CodeAnalysis;

namespace Relay.Server.Push.Commands;

/// <summary>What a command counts against its token's <c>Relay:Push:MaxQueuedBytesPerToken</c> (review H4).</summary>
internal static class CommandCost
{
    /// <summary>
    /// Counted per command on top of its payload: roughly what its row, its transitions and its entry in
    /// memory (id, device and name strings, queue slots) take, so that commands with empty payloads are not free.
    /// </summary>
    public const int PerCommandBytes = 512;

    public static long Of(int payloadBytes) => payloadBytes + (long)PerCommandBytes;
}

/// <summary>
/// The commands that are not final yet, in memory: by id, and per device a <see cref="DeviceCommandQueue"/>;
/// and per API token the bytes its commands that are not final yet hold (<see cref="CommandCost"/>).
/// Every state change goes through <see cref="Move"/>, which holds it to <see cref="CommandLifecycle"/>.
/// Not thread-safe: <see cref="CommandLoop"/> owns the one instance and uses it only on its loop (and
/// at start, before the loop runs).
/// </summary>
internal sealed class ActiveCommands
{
    private readonly Dictionary<string, CommandEntry> _byId = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DeviceCommandQueue> _devices = new(StringComparer.Ordinal);

    // Bounded by the tokens that exist (and revoked ones whose commands are not final yet): a token leaves
    // when its last command does.
    private readonly Dictionary<string, long> _tokenBytes = new(StringComparer.Ordinal);

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

            if (entry.Token is { } token)
            {
                _tokenBytes[token] = _tokenBytes.GetValueOrDefault(token) + CommandCost.Of(entry.PayloadLength);
            }
        }
    }

    /// <summary>Bytes the commands of <paramref name="token"/> that are not final yet hold, reservations included.</summary>
    public long BytesOf(string token) => _tokenBytes.GetValueOrDefault(token);

    public bool Contains(string id) => _byId.ContainsKey(id);

    public bool TryGet(string id, [MaybeNullWhen(false)] out CommandEntry entry) => _byId.TryGetValue(id, out entry);

    /// <summary>The device's queue, or null when it has nothing queued or reserved.</summary>
    public DeviceCommandQueue? QueueOf(string device) => _devices.GetValueOrDefault(device);

    /// <summary>Whether the device's queued and reserved commands are below <paramref name="limit"/>.</summary>
    public bool HasRoom(string device, int limit) => _devices.TryGetValue(device, out var queue) ? queue.HasRoom(limit) : limit > 0;

    /// <summary>
    /// Holds a place in the device's queue for a command about to be stored, so enqueues being stored at
    /// the same time cannot overshoot the limit <see cref="HasRoom"/> checked.
    /// </summary>
    public void Reserve(string device) => QueueFor(device).Reserve();

    /// <summary>The store refused the command a place was held for.</summary>
    public void Unreserve(string device) => QueueFor(device).Unreserve();

    /// <summary>
    /// Counts <paramref name="bytes"/> of commands about to be stored against <paramref name="token"/>; false
    /// (nothing counted) when that would pass <paramref name="limit"/>. Given back when each command becomes
    /// final (<see cref="Retire"/>), or by <see cref="Release"/> when the store refused them.
    /// </summary>
    public bool TryCharge(string token, long bytes, long limit)
    {
        var held = _tokenBytes.GetValueOrDefault(token);
        if (held + bytes > limit)
        {
            return false;
        }

        _tokenBytes[token] = held + bytes;
        return true;
    }

    /// <summary>Gives <paramref name="bytes"/> back to <paramref name="token"/>.</summary>
    public void Release(string token, long bytes)
    {
        var left = _tokenBytes.GetValueOrDefault(token) - bytes;
        if (left > 0)
        {
            _tokenBytes[token] = left;
        }
        else
        {
            _tokenBytes.Remove(token);
        }
    }

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

    /// <summary>A final command's transition is stored: it leaves memory, and gives its bytes back to its token.</summary>
    public void Retire(CommandEntry entry)
    {
        if (_byId.Remove(entry.Id) && entry.Token is { } token)
        {
            Release(token, CommandCost.Of(entry.PayloadLength));
        }
    }

    /// <summary>The commands of <paramref name="device"/> not final yet (a snapshot: the caller may move them).</summary>
    public List<CommandEntry> OfDevice(string device) => [.. _byId.Values.Where(e => string.Equals(e.Device, device, StringComparison.Ordinal))];

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
