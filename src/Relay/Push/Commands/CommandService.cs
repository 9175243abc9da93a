using System.Buffers;
using System.Net;
using System.Text.Json;
using System.Text;
using System.Threading.Channels;
using Relay.Protocol.Mqtt;
using Relay.Server.Devices;
using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Push.Commands;

/// <summary>Why an enqueue or cancel did not happen; the HTTP layer maps each to a status.</summary>
internal enum CommandError
{
    None,
    UnknownDevice,
    UnknownCommand,
    TooManyQueued,
    TooManyWaiters,
    NotCancelable,
}

/// <summary>A validated command request.</summary>
internal sealed record CommandRequest(string Name, byte[] Payload, bool Binary, int TtlSeconds, byte QoS);

/// <summary>
/// The command lifecycle (issue 5 §2): queued → delivered (the device's PUBACK) → succeeded / failed (the
/// device's result), or expired (TTL) / canceled. Commands are durable in <see cref="CommandStore"/> before
/// Enqueue returns. Everything that changes a command's state runs on one loop fed by a bounded channel
/// (the broker's hooks, delivery triggers, cancels, the expiry sweep): the loop drains what is pending,
/// stores the resulting transitions in one transaction, then updates waiters and announces to every
/// <see cref="IPushEventSink"/>. One loop means no two writers race on a command, and a burst of results
/// costs one commit.
/// </summary>
internal sealed partial class CommandService : BackgroundService, IMqttMessageObserver, IMqttClientObserver
{
    public const string CommandsSuffix = "/commands";
    public const string ResultsSuffix = "/results";
    private const int MaxEventsPerBatch = 1024;

    private readonly CommandStore _store;
    private readonly IMqttDeviceChannel _broker;
    private readonly IDeviceRegistry _registry;
    private readonly PushOptions _options;
    private readonly TimeProvider _time;
    private readonly IServiceProvider _services;
    private readonly ILogger<CommandService> _logger;
    private readonly Channel<PushEvent> _events = Channel.CreateBounded<PushEvent>(new BoundedChannelOptions(65536) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });

    // Guards everything below: commands not yet final, per-device queues, waiters.
    private readonly Lock _lock = new();
    private readonly Dictionary<string, CommandEntry> _active = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DeviceQueue> _devices = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<TaskCompletionSource>> _waiters = new(StringComparer.Ordinal);
    private int _waiterCount;

    private IPushEventSink[] _sinks = [];
    private long _eventsDropped;
    private long _unknownResults;
    private long _duplicateResults;
    private readonly long[] _transitions = new long[StateNames.Length];
    private static readonly string[] StateNames = ["queued", "delivered", "succeeded", "failed", "expired", "canceled"];
    private static readonly string[] LimitNames = ["queued_per_device", "waiters", "broadcast_devices", "payload_size"];
    private static readonly string[] LimitKeys = ["Relay:Push:MaxQueuedCommandsPerDevice", "Relay:Push:MaxWaiters", "Relay:Push:MaxBroadcastDevices", "Relay:Push:MaxPayloadBytes"];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _limitLoggedAt = new long[LimitNames.Length];

    public CommandService(CommandStore store, IMqttDeviceChannel broker, IDeviceRegistry registry, PushOptions options, TimeProvider time, IServiceProvider services, ILogger<CommandService> logger)
    {
        _store = store;
        _broker = broker;
        _registry = registry;
        _options = options;
        _time = time;
        _services = services;
        _logger = logger;
    }

    /// <summary>Hook events lost because the loop was too far behind (the sweep redelivers; nothing is lost for good).</summary>
    public long EventsDropped => Volatile.Read(ref _eventsDropped);

    /// <summary>Results naming a command that does not exist (or belongs to another device).</summary>
    public long UnknownResults => Volatile.Read(ref _unknownResults);

    /// <summary>Results for a command that was already final: ignored, never recorded twice.</summary>
    public long DuplicateResults => Volatile.Read(ref _duplicateResults);

    /// <summary>
    /// Counts a refusal by one of the Relay:Push limits, and logs it at most once per 10 s per limit so a client
    /// hammering a full queue cannot flood the log.
    /// </summary>
    public void LimitHit(PushLimit limit, string subject)
    {
        Interlocked.Increment(ref _limits[(int)limit]);
        var now = Environment.TickCount64;
        var last = Volatile.Read(ref _limitLoggedAt[(int)limit]);
        if (now - last >= 10_000 && Interlocked.CompareExchange(ref _limitLoggedAt[(int)limit], now, last) == last)
        {
            LogLimitHit(LimitKeys[(int)limit], subject);
        }
    }

    /// <summary>Refusals by each Relay:Push limit.</summary>
    public long LimitHits(PushLimit limit) => Volatile.Read(ref _limits[(int)limit]);

    /// <summary>Prometheus text: committed transitions by state, limit refusals, odd results and dropped hook events.</summary>
    public void WritePrometheus(System.Text.StringBuilder output)
    {
        PrometheusText.WriteFamily(output, "relay_push_limit_hits_total", "Requests refused by a Relay:Push limit.", "counter", PrometheusText.Labelled(_limits, LimitNames, "limit"));
        PrometheusText.WriteFamily(output, "relay_push_command_transitions_total", "Command state transitions committed, by new state.", "counter", PrometheusText.Labelled(_transitions, StateNames, "state"));
        PrometheusText.WriteFamily(output, "relay_push_results_ignored_total", "Device results not recorded: unknown command, or a duplicate for a final one.", "counter", [new("reason=\"unknown\"", UnknownResults), new("reason=\"duplicate\"", DuplicateResults)]);
        PrometheusText.WriteFamily(output, "relay_push_events_dropped_total", "Broker events the command loop was too far behind to queue (the sweep recovers them).", "counter", [new(string.Empty, EventsDropped)]);
    }

    public PushOptions Options => _options;

    public static string CommandsTopic(string device) => "devices/" + device + CommandsSuffix;

    public static string ResultsTopic(string device) => "devices/" + device + ResultsSuffix;

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        // Sinks are resolved here, not injected: a sink (webhooks) may itself want this service.
        _sinks = [.. _services.GetServices<IPushEventSink>()];
        var active = _store.LoadActive();
        lock (_lock)
        {
            foreach (var entry in active)
            {
                _active[entry.Id] = entry;
                if (entry.State == CommandState.Queued)
                {
                    Queue(entry.Device).Add(entry);
                }
            }
        }

        if (active.Count > 0)
        {
            LogReloaded(active.Count);
        }

        await base.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stores a command (durable when this returns) and starts delivery.</summary>
    public async Task<(CommandEntry? Entry, CommandError Error)> EnqueueAsync(string device, CommandRequest request, CancellationToken cancellationToken)
    {
        if (await _registry.FindAsync(device, cancellationToken).ConfigureAwait(false) is null)
        {
            return (null, CommandError.UnknownDevice);
        }

        var result = await EnqueueManyAsync([device], request, cancellationToken).ConfigureAwait(false);
        return result.Count == 1 ? (result[0], CommandError.None) : (null, CommandError.TooManyQueued);
    }

    /// <summary>
    /// One command per device carrying <paramref name="tag"/> (one transaction). Devices whose queue is
    /// full are skipped and returned in Skipped; TooMany when more devices than MaxBroadcastDevices carry the tag.
    /// </summary>
    public async Task<(List<CommandEntry> Commands, List<string> Skipped, bool TooMany)> BroadcastAsync(string tag, CommandRequest request, CancellationToken cancellationToken)
    {
        var devices = new List<string>();
        string? after = null;
        while (true)
        {
            var page = await _registry.ListAsync(tag, after, 500, cancellationToken).ConfigureAwait(false);
            devices.AddRange(page.Select(static d => d.Id));
            if (devices.Count > _options.MaxBroadcastDevices)
            {
                LimitHit(PushLimit.BroadcastDevices, tag);
                return ([], [], true);
            }

            if (page.Count < 500)
            {
                break;
            }

            after = page[^1].Id;
        }

        var commands = await EnqueueManyAsync(devices, request, cancellationToken).ConfigureAwait(false);
        var skipped = devices.Except(commands.Select(static c => c.Device), StringComparer.Ordinal).ToList();
        return (commands, skipped, false);
    }

    private async Task<List<CommandEntry>> EnqueueManyAsync(IReadOnlyList<string> devices, CommandRequest request, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var entries = new List<CommandEntry>(devices.Count);
        lock (_lock)
        {
            foreach (var device in devices)
            {
                // Reserved before the write so concurrent requests cannot overshoot the limit.
                var queue = Queue(device);
                if (queue.Items.Count + queue.Reserved >= _options.MaxQueuedCommandsPerDevice)
                {
                    LimitHit(PushLimit.QueuedPerDevice, device);
                    continue;
                }

                queue.Reserved++;
                entries.Add(new CommandEntry
                {
                    Id = NewId(),
                    Device = device,
                    Name = request.Name,
                    Binary = request.Binary,
                    Payload = request.Payload,
                    QoS = request.QoS,
                    CreatedAt = now,
                    ExpiresAt = now.AddSeconds(request.TtlSeconds),
                    State = CommandState.Queued,
                    UpdatedAt = now,
                });
            }
        }

        if (entries.Count == 0)
        {
            return entries;
        }

        try
        {
            await _store.InsertAsync(entries, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            lock (_lock)
            {
                foreach (var entry in entries)
                {
                    Queue(entry.Device).Reserved--;
                }
            }

            throw;
        }

        lock (_lock)
        {
            foreach (var entry in entries)
            {
                var queue = Queue(entry.Device);
                queue.Reserved--;
                queue.Add(entry);
                _active[entry.Id] = entry;
            }
        }

        foreach (var entry in entries)
        {
            Announce(new CommandTransition(entry.Id, entry.Device, entry.Name, CommandState.Queued, entry.CreatedAt, null));
            Post(new PushEvent(EventKind.Deliver, entry.Device, null));
        }

        return entries;
    }

    /// <summary>The stored command and its transitions; null when unknown.</summary>
    public (CommandEntry Entry, List<StoredTransition> Transitions)? Get(string id) => _store.Find(id);

    public List<CommandEntry> History(string device, string? after, int limit) => _store.History(device, after, limit);

    /// <summary>Cancels a command that has not gone out to the device yet.</summary>
    public async Task<CommandError> CancelAsync(string id, CancellationToken cancellationToken)
    {
        var request = new CancelRequest(id);
        if (!_events.Writer.TryWrite(new PushEvent(EventKind.Cancel, string.Empty, request)))
        {
            return CommandError.TooManyWaiters;
        }

        return await request.Completion.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits (no polling: one TaskCompletionSource per waiter, completed when the final transition is
    /// stored) until the command is final or <paramref name="timeout"/> passes. Returns TooManyWaiters when
    /// Relay:Push:MaxWaiters are waiting already.
    /// </summary>
    public async Task<CommandError> WaitForFinalAsync(string id, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (!_active.ContainsKey(id))
            {
                return CommandError.None;
            }

            if (_waiterCount >= _options.MaxWaiters)
            {
                LimitHit(PushLimit.Waiters, id);
                return CommandError.TooManyWaiters;
            }

            _waiterCount++;
            if (!_waiters.TryGetValue(id, out var list))
            {
                _waiters[id] = list = [];
            }

            list.Add(waiter);
        }

        try
        {
            await waiter.Task.WaitAsync(timeout, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Not final within the wait: the caller answers with the current state.
        }
        finally
        {
            lock (_lock)
            {
                if (_waiters.TryGetValue(id, out var list) && list.Remove(waiter))
                {
                    _waiterCount--;
                    if (list.Count == 0)
                    {
                        _waiters.Remove(id);
                    }
                }
            }
        }

        return CommandError.None;
    }

    // --- IMqttMessageObserver: called on connections' read loops, so each only queues. ---
    public void OnClientConnected(string clientId, byte protocolVersion, IPEndPoint? remoteEndPoint, DateTimeOffset at) =>
        Post(new PushEvent(EventKind.Connected, clientId, new DevicePresence(clientId, true, at, remoteEndPoint, protocolVersion, at)));

    public void OnClientDisconnected(string clientId, DateTimeOffset at) =>
        Post(new PushEvent(EventKind.Disconnected, clientId, new DevicePresence(clientId, false, at, null, 0, null)));

    public void OnSubscribed(string clientId, string filter)
    {
        if (MqttTopic.Matches(filter, CommandsTopic(clientId)))
        {
            Post(new PushEvent(EventKind.Deliver, clientId, null));
        }
    }

    public ValueTask OnMessageReceived(string clientId, StoredMessage message)
    {
        var topic = message.Topic;
        if (!topic.StartsWith("devices/", StringComparison.Ordinal) || !topic.EndsWith(ResultsSuffix, StringComparison.Ordinal) || topic.Length <= "devices/".Length + ResultsSuffix.Length)
        {
            return ValueTask.CompletedTask;
        }

        var device = topic["devices/".Length..^ResultsSuffix.Length];
        if (device.Contains('/', StringComparison.Ordinal))
        {
            return ValueTask.CompletedTask;
        }

        // The device's PUBACK waits until the result is committed (or found to need no write), so a crash
        // can only lose a result the device has not seen acknowledged, which it then sends again.
        var arrival = new ResultArrival(message.Payload);
        return Post(new PushEvent(EventKind.Result, device, arrival)) ? new ValueTask(WaitStoredAsync(arrival)) : ValueTask.CompletedTask;
    }

    // Bounded, so a stopping or stalled command loop cannot hold a device's connection forever: past it the
    // PUBACK goes anyway and the result may be lost, as before this wait existed.
    private static async Task WaitStoredAsync(ResultArrival arrival)
    {
        try
        {
            await arrival.Stored.Task.WaitAsync(ResultCommitTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
        }
    }

    public void OnMessageDelivered(string clientId, string topic, object? tag)
    {
        if (tag is CommandEntry entry)
        {
            Post(new PushEvent(EventKind.Delivered, entry.Device, entry));
        }
    }

    private bool Post(PushEvent e)
    {
        if (_events.Writer.TryWrite(e))
        {
            return true;
        }

        // Recovered by the sweep (delivery) or by the device (a result it sees unanswered it may resend);
        // counted so an operator sees the loop is overloaded.
        Interlocked.Increment(ref _eventsDropped);
        return false;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var ticker = TickAsync(stoppingToken);
        var batch = new List<PushEvent>(MaxEventsPerBatch);
        var reader = _events.Reader;
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken).ConfigureAwait(false))
            {
                while (batch.Count < MaxEventsPerBatch && reader.TryRead(out var e))
                {
                    batch.Add(e);
                }

                try
                {
                    await ProcessAsync(batch, stoppingToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
                {
                    LogLoopFailed(e);
                }

                batch.Clear();
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }

        await ticker.ConfigureAwait(false);
    }

    // The expiry and redelivery sweep, once a second: cheap (in-memory scan of commands not yet final).
    private async Task TickAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1), _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                _events.Writer.TryWrite(new PushEvent(EventKind.Sweep, string.Empty, null));
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task ProcessAsync(List<PushEvent> batch, CancellationToken cancellationToken)
    {
        var changes = new List<Change>();
        var cancels = new List<(CancelRequest Request, CommandError Outcome, int Change)>();
        var presence = new List<DevicePresence>();
        List<ResultArrival>? results = null;
        var now = _time.GetUtcNow();
        try
        {
            await ApplyBatchAsync(batch, changes, cancels, presence, now, cancellationToken, arrival => (results ??= []).Add(arrival)).ConfigureAwait(false);
        }
        finally
        {
            // Committed (or failed and logged): the devices' PUBACKs for these results may go.
            foreach (var arrival in results ?? [])
            {
                arrival.Stored.TrySetResult();
            }
        }
    }

    private async Task ApplyBatchAsync(List<PushEvent> batch, List<Change> changes, List<(CancelRequest Request, CommandError Outcome, int Change)> cancels, List<DevicePresence> presence, DateTimeOffset now, CancellationToken cancellationToken, Action<ResultArrival> resultSeen)
    {
        foreach (var e in batch)
        {
            switch (e.Kind)
            {
                case EventKind.Connected:
                    presence.Add((DevicePresence)e.Data!);
                    Deliver(e.Device, now);
                    break;
                case EventKind.Disconnected:
                    presence.Add((DevicePresence)e.Data!);
                    lock (_lock)
                    {
                        // The broker dropped what it had not got acknowledged; it goes again on the next connection.
                        if (_devices.TryGetValue(e.Device, out var queue))
                        {
                            queue.Sent.Clear();
                        }
                    }

                    break;
                case EventKind.Deliver:
                    Deliver(e.Device, now);
                    break;
                case EventKind.Delivered:
                    Delivered((CommandEntry)e.Data!, now, changes);
                    break;
                case EventKind.Result:
                {
                    var arrival = (ResultArrival)e.Data!;
                    resultSeen(arrival);
                    Result(e.Device, arrival.Payload, now, changes);
                    break;
                }
                case EventKind.Cancel:
                {
                    var request = (CancelRequest)e.Data!;
                    var outcome = Cancel(request.Id, now, changes);
                    cancels.Add((request, outcome, outcome == CommandError.None ? changes.Count - 1 : -1));
                    break;
                }

                case EventKind.Sweep:
                    Sweep(now, changes);
                    break;
            }
        }

        bool[] applied = [];
        if (changes.Count > 0)
        {
            try
            {
                applied = await _store.ApplyAsync([.. changes.Select(static c => (c.Entry.Seq, c.State, c.At, c.Result))], cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
            {
                // Not stored: put memory back so the next event or sweep tries again.
                LogStoreFailed(e, changes.Count);
                lock (_lock)
                {
                    for (var i = changes.Count - 1; i >= 0; i--)
                    {
                        changes[i].Entry.State = changes[i].Previous;
                    }
                }

                foreach (var (request, _, _) in cancels)
                {
                    request.Completion.TrySetException(e);
                }

                return;
            }
        }

        List<TaskCompletionSource>? wake = null;
        lock (_lock)
        {
            for (var i = 0; i < changes.Count; i++)
            {
                var entry = changes[i].Entry;
                if (CommandEntry.IsFinal(changes[i].State))
                {
                    _active.Remove(entry.Id);
                    if (_waiters.Remove(entry.Id, out var list))
                    {
                        _waiterCount -= list.Count;
                        (wake ??= []).AddRange(list);
                    }
                }
            }

            foreach (var queue in _devices.Where(static d => d.Value.Items.Count == 0 && d.Value.Reserved == 0).Select(static d => d.Key).ToList())
            {
                _devices.Remove(queue);
            }
        }

        for (var i = 0; i < changes.Count; i++)
        {
            if (applied[i])
            {
                var c = changes[i];
                Announce(new CommandTransition(c.Entry.Id, c.Entry.Device, c.Entry.Name, c.State, c.At, c.Result));
            }
        }

        foreach (var (request, outcome, index) in cancels)
        {
            request.Completion.TrySetResult(index >= 0 && !applied[index] ? CommandError.NotCancelable : outcome);
        }

        if (wake is not null)
        {
            foreach (var waiter in wake)
            {
                waiter.TrySetResult();
            }
        }

        foreach (var p in presence)
        {
            foreach (var sink in _sinks)
            {
                try
                {
                    sink.OnPresenceChanged(p);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    LogSinkFailed(e, sink.GetType().Name);
                }
            }
        }
    }

    /// <summary>Hands the device's queued commands, oldest first, to its connection while it takes them.</summary>
    private void Deliver(string device, DateTimeOffset now)
    {
        lock (_lock)
        {
            if (!_devices.TryGetValue(device, out var queue))
            {
                return;
            }

            foreach (var entry in queue.Items)
            {
                if (queue.Sent.Contains(entry) || entry.ExpiresAt <= now)
                {
                    continue;
                }

                // Lock order: this lock, then the broker's session lock (the broker never calls back under it into us).
                if (!_broker.PublishToClient(device, BuildMessage(entry), entry))
                {
                    // Offline, not subscribed, or its queue is full: the rest waits (order is kept).
                    break;
                }

                queue.Sent.Add(entry);
            }
        }
    }

    private void Delivered(CommandEntry entry, DateTimeOffset now, List<Change> changes)
    {
        lock (_lock)
        {
            if (_devices.TryGetValue(entry.Device, out var queue))
            {
                queue.Sent.Remove(entry);
            }

            if (entry.State != CommandState.Queued || !_active.ContainsKey(entry.Id))
            {
                // Canceled or expired meanwhile, or a resend's second PUBACK.
                return;
            }

            queue?.Remove(entry);
            changes.Add(new Change(entry, CommandState.Delivered, entry.State, now, null));
            entry.State = CommandState.Delivered;
        }
    }

    private void Result(string device, ReadOnlyMemory<byte> payload, DateTimeOffset now, List<Change> changes)
    {
        if (!TryParseResult(payload.Span, out var id, out var succeeded, out var resultJson))
        {
            Interlocked.Increment(ref _unknownResults);
            LogBadResult(device);
            return;
        }

        lock (_lock)
        {
            if (_active.TryGetValue(id, out var entry) && entry.Device == device)
            {
                if (CommandEntry.IsFinal(entry.State))
                {
                    Interlocked.Increment(ref _duplicateResults);
                    return;
                }

                if (_devices.TryGetValue(device, out var queue))
                {
                    queue.Sent.Remove(entry);
                    queue.Remove(entry);
                }

                if (entry.State == CommandState.Queued)
                {
                    // A result proves delivery. Clients commonly answer from their message callback before
                    // they send the PUBACK (paho does), so the result may come first; the history still
                    // reads queued → delivered → final.
                    changes.Add(new Change(entry, CommandState.Delivered, entry.State, now, null));
                    entry.State = CommandState.Delivered;
                }

                var state = succeeded ? CommandState.Succeeded : CommandState.Failed;
                changes.Add(new Change(entry, state, entry.State, now, resultJson));
                entry.State = state;
                return;
            }
        }

        // Not in memory: final already (a duplicate), or not ours. One read, only on this unusual path.
        if (_store.Find(id) is { } stored && stored.Entry.Device == device)
        {
            Interlocked.Increment(ref _duplicateResults);
            LogDuplicateResult(device, id);
            return;
        }

        Interlocked.Increment(ref _unknownResults);
        LogUnknownResult(device, id);
    }

    private CommandError Cancel(string id, DateTimeOffset now, List<Change> changes)
    {
        lock (_lock)
        {
            if (_active.TryGetValue(id, out var entry))
            {
                var queue = Queue(entry.Device);
                if (entry.State != CommandState.Queued || queue.Sent.Contains(entry))
                {
                    // On its way to (or at) the device: it may run, so it can no longer be canceled.
                    return CommandError.NotCancelable;
                }

                queue.Remove(entry);
                changes.Add(new Change(entry, CommandState.Canceled, entry.State, now, null));
                entry.State = CommandState.Canceled;
                return CommandError.None;
            }
        }

        return _store.Find(id) is null ? CommandError.UnknownCommand : CommandError.NotCancelable;
    }

    private void Sweep(DateTimeOffset now, List<Change> changes)
    {
        List<string>? retry = null;
        lock (_lock)
        {
            foreach (var entry in _active.Values)
            {
                if (!CommandEntry.IsFinal(entry.State) && entry.ExpiresAt <= now)
                {
                    if (_devices.TryGetValue(entry.Device, out var queue))
                    {
                        queue.Sent.Remove(entry);
                        queue.Remove(entry);
                    }

                    changes.Add(new Change(entry, CommandState.Expired, entry.State, now, null));
                    entry.State = CommandState.Expired;
                }
            }

            foreach (var (device, queue) in _devices)
            {
                if (queue.Items.Count > queue.Sent.Count)
                {
                    (retry ??= []).Add(device);
                }
            }
        }

        if (retry is not null)
        {
            foreach (var device in retry)
            {
                if (_broker.IsOnline(device))
                {
                    Deliver(device, now);
                }
            }
        }
    }

    /// <summary>The device-facing envelope (docs/push.md): {"id","name","payload"|"payloadBase64","expiresAt"}.</summary>
    private static StoredMessage BuildMessage(CommandEntry entry)
    {
        var buffer = new ArrayBufferWriter<byte>(entry.Payload.Length + 160);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("id", entry.Id);
            writer.WriteString("name", entry.Name);
            if (entry.Binary)
            {
                writer.WriteBase64String("payloadBase64", entry.Payload);
            }
            else
            {
                writer.WritePropertyName("payload");
                writer.WriteRawValue(entry.Payload, skipInputValidation: true);
            }

            writer.WriteString("expiresAt", entry.ExpiresAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
            writer.WriteEndObject();
        }

        // MQTT 5: the request/response pattern of §4.10 (response topic + correlation data = command id);
        // 3.1.1 clients get the same envelope without properties.
        var properties = new MqttMessageProperties(1, "application/json", ResultsTopic(entry.Device), Encoding.UTF8.GetBytes(entry.Id), null);
        return new StoredMessage(CommandsTopic(entry.Device), buffer.WrittenMemory.ToArray(), entry.QoS, false, entry.ExpiresAt, properties);
    }

    /// <summary>Parses {"id": "...", "status": "succeeded"|"failed", "payload": any?}.</summary>
    internal static bool TryParseResult(ReadOnlySpan<byte> json, out string id, out bool succeeded, out string? payload)
    {
        id = string.Empty;
        succeeded = false;
        payload = null;
        string? status = null;
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 64 });
            using var document = JsonDocument.ParseValue(ref reader);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return false;
            }

            foreach (var property in root.EnumerateObject())
            {
                switch (property.Name)
                {
                    case "id" when property.Value.ValueKind == JsonValueKind.String:
                        id = property.Value.GetString()!;
                        break;
                    case "status" when property.Value.ValueKind == JsonValueKind.String:
                        status = property.Value.GetString();
                        break;
                    case "payload":
                        payload = property.Value.GetRawText();
                        break;
                }
            }
        }
        catch (JsonException)
        {
            return false;
        }

        succeeded = status == "succeeded";
        return id.Length > 0 && (succeeded || status == "failed");
    }

    private void Announce(CommandTransition transition)
    {
        Interlocked.Increment(ref _transitions[(int)transition.State]);
        foreach (var sink in _sinks)
        {
            try
            {
                sink.OnCommandTransition(transition);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogSinkFailed(e, sink.GetType().Name);
            }
        }
    }

    private DeviceQueue Queue(string device)
    {
        if (!_devices.TryGetValue(device, out var queue))
        {
            _devices[device] = queue = new DeviceQueue();
        }

        return queue;
    }

    /// <summary>A time-ordered id (UUIDv7, 32 hex digits): sorts by creation, unguessable in its random part.</summary>
    private static string NewId() => Guid.CreateVersion7().ToString("N");

    private enum EventKind
    {
        Connected,
        Disconnected,
        Deliver,
        Delivered,
        Result,
        Cancel,
        Sweep,
    }

    private static readonly TimeSpan ResultCommitTimeout = TimeSpan.FromSeconds(10);

    private readonly record struct PushEvent(EventKind Kind, string Device, object? Data);

    /// <summary>A device's result on its way to the store; its PUBACK waits for <see cref="Stored"/>.</summary>
    private sealed class ResultArrival(ReadOnlyMemory<byte> payload)
    {
        public ReadOnlyMemory<byte> Payload { get; } = payload;

        public TaskCompletionSource Stored { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly record struct Change(CommandEntry Entry, CommandState State, CommandState Previous, DateTimeOffset At, string? Result);

    private sealed class CancelRequest(string id)
    {
        public string Id { get; } = id;

        public TaskCompletionSource<CommandError> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A device's queued (not yet delivered) commands in creation order, and those handed to its connection.</summary>
    private sealed class DeviceQueue
    {
        public List<CommandEntry> Items { get; } = [];

        public HashSet<CommandEntry> Sent { get; } = new(ReferenceEqualityComparer.Instance);

        public int Reserved { get; set; }

        public void Add(CommandEntry entry)
        {
            // Concurrent enqueues may finish out of order; the store's sequence is the order.
            var at = Items.Count;
            while (at > 0 && Items[at - 1].Seq > entry.Seq)
            {
                at--;
            }

            Items.Insert(at, entry);
        }

        public void Remove(CommandEntry entry) => Items.Remove(entry);
    }

    [LoggerMessage(EventId = 7010, Level = LogLevel.Warning, Message = "Push: refused by {Key} ({Subject}); further refusals by it are counted in relay_push_limit_hits_total and logged at most every 10 s")]
    private partial void LogLimitHit(string key, string subject);

    [LoggerMessage(EventId = 7001, Level = LogLevel.Information, Message = "Push: reloaded {Count} command(s) that were not final")]
    private partial void LogReloaded(int count);

    [LoggerMessage(EventId = 7002, Level = LogLevel.Information, Message = "Push: result from {Device} for unknown command {Id}; ignored (counted)")]
    private partial void LogUnknownResult(string device, string id);

    [LoggerMessage(EventId = 7003, Level = LogLevel.Debug, Message = "Push: duplicate result from {Device} for command {Id}; ignored")]
    private partial void LogDuplicateResult(string device, string id);

    [LoggerMessage(EventId = 7004, Level = LogLevel.Information, Message = "Push: result from {Device} is not {{\"id\",\"status\":\"succeeded\"|\"failed\",\"payload\"?}}; ignored (counted)")]
    private partial void LogBadResult(string device);

    [LoggerMessage(EventId = 7005, Level = LogLevel.Error, Message = "Push: storing {Count} command transition(s) failed; they will be retried")]
    private partial void LogStoreFailed(Exception exception, int count);

    [LoggerMessage(EventId = 7006, Level = LogLevel.Error, Message = "Push: event sink {Sink} threw; ignored")]
    private partial void LogSinkFailed(Exception exception, string sink);

    [LoggerMessage(EventId = 7007, Level = LogLevel.Error, Message = "Push: command loop failed on a batch")]
    private partial void LogLoopFailed(Exception exception);
}

/// <summary>The Relay:Push limits that refuse a request.</summary>
internal enum PushLimit
{
    QueuedPerDevice,
    Waiters,
    BroadcastDevices,
    PayloadSize,
}
