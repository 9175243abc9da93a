namespace Relay.Server.Push.Commands;

/// <summary>
/// One device's commands that are queued (not yet delivered), in creation order; which of them have been
/// handed to the device's connection and await its acknowledgement; and how many places enqueues still
/// being stored hold. Part of <see cref="ActiveCommands"/>, and like it used only on the command loop.
/// </summary>
internal sealed class DeviceCommandQueue
{
    private readonly List<CommandEntry> _waiting = [];
    private readonly HashSet<CommandEntry> _handedOver = new(ReferenceEqualityComparer.Instance);

    /// <summary>Queued commands.</summary>
    public int Count => _waiting.Count;

    /// <summary>The queued command at <paramref name="index"/>, oldest first.</summary>
    public CommandEntry this[int index] => _waiting[index];

    /// <summary>Places held for commands being stored.</summary>
    public int Reserved { get; private set; }

    /// <summary>Nothing queued, nothing reserved: the queue may go.</summary>
    public bool IsIdle => _waiting.Count == 0 && Reserved == 0;

    /// <summary>Some queued command is not with the connection.</summary>
    public bool HasUnsent => _waiting.Count > _handedOver.Count;

    /// <summary>Whether queued and reserved commands together are below <paramref name="limit"/>.</summary>
    public bool HasRoom(int limit) => _waiting.Count + Reserved < limit;

    public void Reserve() => Reserved++;

    public void Unreserve() => Reserved--;

    public void Add(CommandEntry entry)
    {
        // Concurrent enqueues may be stored out of order; the store's sequence is the order.
        var at = _waiting.Count;
        while (at > 0 && _waiting[at - 1].Seq > entry.Seq)
        {
            at--;
        }

        _waiting.Insert(at, entry);
    }

    public bool Contains(CommandEntry entry) => _waiting.Contains(entry);

    /// <summary>Takes the command out: it left the queued state (or went back to the store's care).</summary>
    public void Remove(CommandEntry entry)
    {
        _handedOver.Remove(entry);
        _waiting.Remove(entry);
    }

    public bool IsHandedOver(CommandEntry entry) => _handedOver.Contains(entry);

    public void MarkHandedOver(CommandEntry entry) => _handedOver.Add(entry);

    /// <summary>The connection acknowledged, or will never acknowledge, this one.</summary>
    public void ForgetHandedOver(CommandEntry entry) => _handedOver.Remove(entry);

    /// <summary>The connection ended: the broker dropped what it had not got acknowledged, so all of it goes again.</summary>
    public void ForgetAllHandedOver() => _handedOver.Clear();
}
