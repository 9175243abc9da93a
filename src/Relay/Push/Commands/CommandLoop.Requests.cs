namespace Relay.Server.Push.Commands;

// What request threads ask of the loop. Each posts an event and awaits the answer the loop puts in it;
// none touches the loop's state.
internal sealed partial class CommandLoop
{
    /// <summary>
    /// Stores one command per device in <paramref name="devices"/> (one transaction; durable when this
    /// returns) and has the loop deliver them. Devices whose queue is full (Relay:Push:MaxQueuedCommandsPerDevice)
    /// are left out; the result holds the commands stored. None is stored, and OverQuota is true, when they
    /// would pass the request's token's Relay:Push:MaxQueuedBytesPerToken. With an idempotency key, a device
    /// that has a command with that key already gets none: the stored one is in the result instead.
    /// </summary>
    public async Task<(List<CommandEntry> Entries, bool OverQuota)> EnqueueAsync(IReadOnlyList<string> devices, CommandRequest request, CancellationToken cancellationToken)
    {
        List<CommandEntry> existing = [];
        if (request.IdempotencyKey is { } key)
        {
            // Callers with keys (a schedule's runs) do not enqueue the same key concurrently; should two ever
            // race, the store's unique index refuses the second insert and the caller's retry finds the first.
            existing = _store.FindByKey(key, devices);
            if (existing.Count > 0)
            {
                var done = existing.Select(static e => e.Device).ToHashSet(StringComparer.Ordinal);
                devices = [.. devices.Where(d => !done.Contains(d))];
            }

            if (devices.Count == 0)
            {
                return (existing, false);
            }
        }

        var now = Time.GetUtcNow();
        var from = request.NotBefore is { } notBefore && notBefore > now ? notBefore : now;
        var cost = CommandCost.Of(request.Payload.Length);
        var places = new PlacesRequested(devices, request.Token, cost);
        if (!await PostAsync(places, cancellationToken).ConfigureAwait(false))
        {
            throw new InvalidOperationException("The command loop has stopped.");
        }

        // Not abandoned on cancellation: places the loop holds must be filled or released below.
        var (granted, overQuota) = await places.Answer.Task.ConfigureAwait(false);
        var entries = new List<CommandEntry>(granted.Count);
        foreach (var device in granted)
        {
            entries.Add(new CommandEntry
            {
                Id = NewId(now),
                Device = device,
                Name = request.Name,
                Binary = request.Binary,
                Payload = request.Payload,
                PayloadLength = request.Payload.Length,
                Token = request.Token,
                QoS = request.QoS,
                CreatedAt = now,
                ExpiresAt = from.AddSeconds(request.TtlSeconds),
                NotBefore = from > now ? from : null,
                IdempotencyKey = request.IdempotencyKey,
                State = CommandState.Queued,
                UpdatedAt = now,
            });
        }

        if (entries.Count == 0)
        {
            return ([.. existing, .. entries], overQuota);
        }

        var stored = false;
        try
        {
            await _store.InsertAsync(entries, cancellationToken).ConfigureAwait(false);
            stored = true;
        }
        finally
        {
            // Exactly one of the two, and it must not be lost (so no cancellation): the places are held until
            // then. If the loop has stopped, stored commands are reloaded at the next start.
            CommandEvent settle = stored ? new CommandsStored(entries) : new PlacesReleased(granted, request.Token, granted.Count * cost);
            await PostAsync(settle, CancellationToken.None).ConfigureAwait(false);
        }

        return ([.. existing, .. entries], false);
    }

    /// <summary>Cancels a command that has not gone out to its device yet. Busy when the loop is too far behind to take the request.</summary>
    public async Task<CommandError> CancelAsync(string id, CancellationToken cancellationToken)
    {
        var cancel = new CancelRequested(id);
        if (!TryPost(cancel))
        {
            return CommandError.Busy;
        }

        return await cancel.Answer.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Ends the commands of a deleted device (queued: canceled; delivered: expired); returns how many, once
    /// stored. Waits for room in the loop's queue: an operator's delete must not be dropped.
    /// </summary>
    public async Task<int> EndCommandsOfAsync(string device, CancellationToken cancellationToken)
    {
        var removed = new DeviceRemoved(device);
        if (!await PostAsync(removed, cancellationToken).ConfigureAwait(false))
        {
            throw new InvalidOperationException("The command loop has stopped.");
        }

        return await removed.Answer.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits until the command is final or <paramref name="timeout"/> passes (no polling: the loop completes
    /// the waiter when the final transition is stored). TooManyWaiters when Relay:Push:MaxWaiters are
    /// waiting already; None otherwise, and the caller reads the state.
    /// </summary>
    public async Task<CommandError> WaitForFinalAsync(string id, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var wait = new WaitRequested(id);
        if (!await PostAsync(wait, cancellationToken).ConfigureAwait(false))
        {
            return CommandError.None;
        }

        try
        {
            return await wait.Waiter.Task.WaitAsync(timeout, Time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Not final within the wait: the caller answers with the current state.
            return CommandError.None;
        }
        finally
        {
            if (!wait.Waiter.Task.IsCompleted)
            {
                // Frees its place among Relay:Push:MaxWaiters; must not be lost, so no cancellation.
                await PostAsync(new WaitEnded(wait), CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    /// <summary>A time-ordered id (UUIDv7, 32 hex digits): sorts by creation, unguessable in its random part.</summary>
    private static string NewId(DateTimeOffset now) => Guid.CreateVersion7(now).ToString("N");
}
