namespace Relay.Server.Push.Commands;

// What each event does to memory, by the rules of CommandLifecycle. Steps are taken in memory at once and
// stored with the batch (CommandLoop.cs). No I/O here but handing PUBLISHes to the broker (which queues
// them) and one store read when a result or a cancel names a command no longer in memory.
internal sealed partial class CommandLoop
{
    private void Apply(CommandEvent e, DateTimeOffset now)
    {
        switch (e)
        {
            case DeviceConnected connected:
                _batch.Presence.Add(connected.Presence);
                Deliver(connected.Presence.DeviceId, now);
                break;
            case DeviceDisconnected disconnected:
                _batch.Presence.Add(disconnected.Presence);

                // The broker dropped what it had not got acknowledged; it goes again on the next connection.
                _active.QueueOf(disconnected.Presence.DeviceId)?.ForgetAllHandedOver();
                break;
            case DeliveryRequested requested:
                Deliver(requested.Device, now);
                break;
            case DeliveryAcknowledged acknowledged:
                Acknowledge(acknowledged.Entry, now);
                break;
            case ResultReceived result:
                _batch.Results.Add(result.Arrival);
                Record(result.Device, result.Arrival.Payload.Span, now);
                break;
            case PlacesRequested places:
                Reserve(places);
                break;
            case CommandsStored stored:
                Admit(stored.Entries, now);
                break;
            case PlacesReleased released:
                foreach (var device in released.Devices)
                {
                    _active.Unreserve(device);
                }

                if (released.Token is { } token)
                {
                    _active.Release(token, released.Bytes);
                }

                break;
            case CancelRequested cancel:
                var outcome = Cancel(cancel.Id, now);
                _batch.Cancels.Add((cancel, outcome, outcome == CommandError.None ? _batch.Changes.Count - 1 : -1));
                break;
            case DeviceRemoved removed:
                _batch.Removals.Add((removed, EndCommandsOf(removed.Device, now)));
                break;
            case WaitRequested wait:
                Wait(wait);
                break;
            case WaitEnded ended:
                _waiters.Remove(ended.Request.Id, ended.Request.Waiter);
                break;
            case SweepDue:
                Sweep(now);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(e), e.GetType().Name, "Not an event the command loop handles.");
        }
    }

    /// <summary>
    /// Hands the device's queued commands, oldest first, to its connection while it takes them. A command
    /// reloaded at start has its payload read from the store here, one row at a time, and not kept: the
    /// PUBLISH holds its own copy, and a redelivery reads it again.
    /// </summary>
    private void Deliver(string device, DateTimeOffset now)
    {
        if (_active.QueueOf(device) is not { } queue)
        {
            return;
        }

        for (var i = 0; i < queue.Count; i++)
        {
            var entry = queue[i];
            if (queue.IsHandedOver(entry) || !CommandLifecycle.IsDeliverable(entry.State, entry.ExpiresAt, entry.NotBefore, now))
            {
                // Expired, or held until its notBefore (the sweep's next pass sends it): later ones may go.
                continue;
            }

            if ((entry.Payload ?? _store.LoadPayload(entry.Seq)) is not { } payload)
            {
                // Cannot happen while the command is not final (only final ones are pruned); skipped, not sent empty.
                continue;
            }

            if (!_channel.PublishToClient(device, CommandWire.BuildMessage(entry, payload), entry))
            {
                // Offline, not subscribed, or its queue is full: the rest waits (order is kept).
                break;
            }

            queue.MarkHandedOver(entry);
        }
    }

    private void Acknowledge(CommandEntry entry, DateTimeOffset now)
    {
        _active.QueueOf(entry.Device)?.ForgetHandedOver(entry);
        if (!_active.Contains(entry.Id) || !CommandLifecycle.TryAcknowledge(entry.State, out var next))
        {
            // Canceled or expired meanwhile, or a redelivery's second acknowledgement.
            return;
        }

        Step(entry, next, now, null);
    }

    private void Record(string device, ReadOnlySpan<byte> payload, DateTimeOffset now)
    {
        if (!CommandWire.TryParseResult(payload, out var result))
        {
            _metrics.CountUnknownResult();
            LogBadResult(device);
            return;
        }

        if (_active.TryGet(result.CommandId, out var entry) && entry.Device == device)
        {
            var steps = CommandLifecycle.OnResult(entry.State, result.Succeeded);
            if (steps.IsDuplicate)
            {
                _metrics.CountDuplicateResult();
                return;
            }

            if (steps.ProvesDelivery)
            {
                Step(entry, CommandState.Delivered, now, null);
            }

            Step(entry, steps.Final, now, result.PayloadJson);
            return;
        }

        // Not in memory: final already (a duplicate), or not ours. One read, only on this unusual path.
        if (_store.Find(result.CommandId) is { } stored && stored.Entry.Device == device)
        {
            _metrics.CountDuplicateResult();
            LogDuplicateResult(device, result.CommandId);
            return;
        }

        _metrics.CountUnknownResult();
        LogUnknownResult(device, result.CommandId);
    }

    /// <summary>
    /// Places for an enqueue: each device below Relay:Push:MaxQueuedCommandsPerDevice gets one (the others are
    /// left out), unless the commands together would pass the token's Relay:Push:MaxQueuedBytesPerToken: then
    /// none does, so a broadcast is not sent to an arbitrary part of its tag.
    /// </summary>
    private void Reserve(PlacesRequested request)
    {
        var granted = new List<string>(request.Devices.Count);
        foreach (var device in request.Devices)
        {
            if (_active.HasRoom(device, _options.MaxQueuedCommandsPerDevice))
            {
                granted.Add(device);
            }
            else
            {
                _limitHits.Record(PushLimit.QueuedPerDevice, device);
            }
        }

        if (granted.Count > 0 && request.Token is { } token && !_active.TryCharge(token, granted.Count * request.CostPerCommand, _options.MaxQueuedBytesPerToken))
        {
            _limitHits.Record(PushLimit.QueuedBytesPerToken, token);
            request.Answer.TrySetResult(new PlacesGranted([], OverQuota: true));
            return;
        }

        foreach (var device in granted)
        {
            _active.Reserve(device);
        }

        request.Answer.TrySetResult(new PlacesGranted(granted, OverQuota: false));
    }

    private void Admit(IReadOnlyList<CommandEntry> entries, DateTimeOffset now)
    {
        foreach (var entry in entries)
        {
            _active.Admit(entry);

            // Stored with the command already.
            Announce(new CommandTransition(entry.Id, entry.Device, entry.Name, CommandState.Queued, entry.CreatedAt, null));
        }

        foreach (var entry in entries)
        {
            Deliver(entry.Device, now);
        }
    }

    private CommandError Cancel(string id, DateTimeOffset now)
    {
        if (_active.TryGet(id, out var entry))
        {
            if (!CommandLifecycle.CanCancel(entry.State, _active.IsHandedOver(entry)))
            {
                return CommandError.NotCancelable;
            }

            Step(entry, CommandState.Canceled, now, null);
            return CommandError.None;
        }

        return _store.Find(id) is null ? CommandError.UnknownCommand : CommandError.NotCancelable;
    }

    /// <summary>
    /// The device was deleted: a queued command is canceled (handed to its connection or not: that connection
    /// is being ended), a delivered one expires at once (no result can come from a device that no longer
    /// exists). A scan of the commands in memory: deleting a device is rare and takes the admin scope.
    /// </summary>
    private int EndCommandsOf(string device, DateTimeOffset now)
    {
        var ended = 0;
        foreach (var entry in _active.OfDevice(device))
        {
            Step(entry, entry.State == CommandState.Queued ? CommandState.Canceled : CommandState.Expired, now, null);
            ended++;
        }

        return ended;
    }

    private void Wait(WaitRequested request)
    {
        if (!_active.Contains(request.Id))
        {
            // Final already (or unknown): the caller reads the stored state.
            request.Waiter.TrySetResult(CommandError.None);
        }
        else if (!_waiters.TryAdd(request.Id, request.Waiter))
        {
            _limitHits.Record(PushLimit.Waiters, request.Id);
            request.Waiter.TrySetResult(CommandError.TooManyWaiters);
        }
    }

    /// <summary>
    /// The expiry and redelivery sweep: an in-memory scan of the commands not yet final. At most once an hour
    /// it also starts a prune of commands.db (CommandLoop.Retention.cs), which runs off the loop.
    /// </summary>
    private void Sweep(DateTimeOffset now)
    {
        _retention.StartPruneIfDue(now);

        foreach (var entry in _active.All)
        {
            if (CommandLifecycle.HasExpired(entry.State, entry.ExpiresAt, now))
            {
                Step(entry, CommandState.Expired, now, null);
            }
        }

        var retry = _batch.Retry;
        retry.Clear();
        _active.CollectUnsent(retry);
        foreach (var device in retry)
        {
            if (_channel.IsOnline(device))
            {
                Deliver(device, now);
            }
        }
    }

    /// <summary>Moves the command in memory now; the step is stored with the batch, then announced.</summary>
    private void Step(CommandEntry entry, CommandState to, DateTimeOffset now, string? resultJson)
    {
        _batch.Changes.Add(new CommandChange(entry, to, entry.State, now, resultJson));
        _active.Move(entry, to);
    }
}
