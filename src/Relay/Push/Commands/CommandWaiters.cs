namespace Relay.Server.Push.Commands;

/// <summary>
/// Long-polls (<c>GET /v1/commands/{id}?wait=N</c>) waiting for a command to become final: one
/// <see cref="TaskCompletionSource{TResult}"/> per request, completed when the final transition is stored,
/// so nobody polls. At most Relay:Push:MaxWaiters at once. Not thread-safe: <see cref="CommandLoop"/> owns
/// the one instance and uses it only on its loop.
/// </summary>
internal sealed class CommandWaiters(int limit)
{
    private readonly Dictionary<string, List<TaskCompletionSource<CommandError>>> _byCommand = new(StringComparer.Ordinal);

    /// <summary>Requests waiting now, over every command.</summary>
    public int Count { get; private set; }

    /// <summary>Adds a waiter for command <paramref name="id"/>; false when <see cref="Count"/> is at the limit already.</summary>
    public bool TryAdd(string id, TaskCompletionSource<CommandError> waiter)
    {
        if (Count >= limit)
        {
            return false;
        }

        if (!_byCommand.TryGetValue(id, out var list))
        {
            _byCommand[id] = list = [];
        }

        list.Add(waiter);
        Count++;
        return true;
    }

    /// <summary>A waiter that stopped waiting (its time was up, or its request went away); nothing when it was taken already.</summary>
    public void Remove(string id, TaskCompletionSource<CommandError> waiter)
    {
        if (_byCommand.TryGetValue(id, out var list) && list.Remove(waiter))
        {
            Count--;
            if (list.Count == 0)
            {
                _byCommand.Remove(id);
            }
        }
    }

    /// <summary>Moves every waiter of command <paramref name="id"/> into <paramref name="wake"/>: the command is final.</summary>
    public void TakeAll(string id, List<TaskCompletionSource<CommandError>> wake)
    {
        if (_byCommand.Remove(id, out var list))
        {
            Count -= list.Count;
            wake.AddRange(list);
        }
    }
}
