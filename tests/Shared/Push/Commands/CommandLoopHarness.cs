using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Devices;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>
/// The command plane without sockets: a real <see cref="CommandLoop"/>, <see cref="CommandService"/> and
/// <see cref="CommandMqttObserver"/> over a <see cref="CommandStore"/> in a temporary directory, the real
/// SQLite device registry there (devices d1..d3, tag "lobby" on d1 and d3), a fake broker channel (the
/// broker's side of <see cref="IMqttDeviceChannel"/>, driven by the test) and a fake clock.
/// </summary>
internal sealed class CommandLoopHarness : IAsyncDisposable
{
    public static readonly DateTimeOffset Start = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private readonly string _directory;
    private readonly bool _ownsDirectory;

    private readonly MqttDatabase _devices;

    private CommandLoopHarness(PushOptions options, string directory, bool ownsDirectory, MqttDatabase devices, IDeviceRegistry registry)
    {
        _directory = directory;
        _ownsDirectory = ownsDirectory;
        _devices = devices;
        Options = options;
        Store = CommandStore.Open(directory);
        var limitHits = new PushLimitHits(Metrics, Time, NullLogger<PushLimitHits>.Instance);
        Loop = new CommandLoop(Store, Channel, options, Metrics, limitHits, [Sink, new StoredFirstSink(Store, this)], Time, NullLogger<CommandLoop>.Instance);
        Commands = new CommandService(Loop, Store, registry, options, limitHits);
        Observer = new CommandMqttObserver(Loop, Metrics, Time, NullLogger<CommandMqttObserver>.Instance);
    }

    public FakeTimeProvider Time { get; } = new(Start);

    /// <summary>Where commands.db (and the device registry's mqtt.db) live.</summary>
    public string DataDirectory => _directory;

    public FakeDeviceChannel Channel { get; } = new();

    public RecordingSink Sink { get; } = new();

    public PushMetrics Metrics { get; } = new();

    public PushOptions Options { get; }

    public CommandStore Store { get; }

    public CommandLoop Loop { get; }

    public CommandService Commands { get; }

    public CommandMqttObserver Observer { get; }

    /// <summary>Transitions a sink heard before the store had them (must stay empty).</summary>
    public List<CommandTransition> AnnouncedBeforeStored { get; } = [];

    /// <summary>Presence changes the sinks heard.</summary>
    public List<DevicePresence> Presence { get; } = [];

    public static Task<CommandLoopHarness> StartAsync(PushOptions? options = null) =>
        StartAsync(options ?? new PushOptions(), Directory.CreateTempSubdirectory("relay-commands-").FullName, ownsDirectory: true);

    /// <summary>A harness over <paramref name="directory"/>, which outlives it (a restart).</summary>
    public static Task<CommandLoopHarness> StartOnAsync(string directory, PushOptions? options = null) => StartAsync(options ?? new PushOptions(), directory, ownsDirectory: false);

    private static async Task<CommandLoopHarness> StartAsync(PushOptions options, string directory, bool ownsDirectory)
    {
        var devices = MqttDatabase.Open(directory);
        var registry = new SqliteDeviceRegistry(devices, TimeProvider.System, iterations: 1);
        foreach (var (id, tags) in new[] { ("d1", new[] { "lobby" }), ("d2", Array.Empty<string>()), ("d3", new[] { "lobby" }) })
        {
            await registry.AddAsync(id, "harness-secret", [], tags, CancellationToken.None);
        }

        var harness = new CommandLoopHarness(options, directory, ownsDirectory, devices, registry);
        await harness.Loop.StartAsync(CancellationToken.None);
        return harness;
    }

    public static CommandRequest Request(string name = "blink", int ttlSeconds = 3600) => new(name, "{\"on\":true}"u8.ToArray(), false, ttlSeconds, 1);

    /// <summary>Enqueues to one device and expects it accepted.</summary>
    public async Task<CommandEntry> EnqueueAsync(string device, string name = "blink", int ttlSeconds = 3600)
    {
        var (entry, error) = await Commands.EnqueueAsync(device, Request(name, ttlSeconds), CancellationToken.None);
        Assert.Equal(CommandError.None, error);
        return entry!;
    }

    /// <summary>
    /// Returns once the loop has handled every event posted before this call: a cancel is answered only
    /// after its batch is committed, and the loop takes events in posting order.
    /// </summary>
    public async Task DrainAsync() => Assert.Equal(CommandError.UnknownCommand, await Loop.CancelAsync("drain-" + Guid.NewGuid().ToString("N"), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));

    /// <summary>The device connects and subscribes to its commands topic, as the broker reports it.</summary>
    public void Connect(string device)
    {
        Channel.Connect(device);
        Observer.OnClientConnected(device, 5, new IPEndPoint(IPAddress.Loopback, 50000), Time.GetUtcNow());
        Observer.OnSubscribed(device, "devices/" + device + "/commands");
    }

    public void Disconnect(string device)
    {
        Channel.Disconnect(device);
        Observer.OnClientDisconnected(device, Time.GetUtcNow());
    }

    /// <summary>The device's PUBACK for the PUBLISH that carried <paramref name="entry"/>.</summary>
    public void Acknowledge(CommandEntry entry) => Observer.OnMessageDelivered(entry.Device, "devices/" + entry.Device + "/commands", entry);

    /// <summary>
    /// The device publishes <paramref name="json"/> to <paramref name="topic"/>; completes when the broker
    /// may answer: true for a PUBACK, false when the result was not stored (no success acknowledgement).
    /// </summary>
    public Task<bool> PublishAsync(string device, string topic, string json) =>
        Observer.OnMessageReceived(device, new StoredMessage(topic, System.Text.Encoding.UTF8.GetBytes(json), 1, false, null, null)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));

    public Task<bool> ResultAsync(CommandEntry entry, string status, string payload = "{\"ok\":1}") =>
        PublishAsync(entry.Device, "devices/" + entry.Device + "/results", $"{{\"id\":\"{entry.Id}\",\"status\":\"{status}\",\"payload\":{payload}}}");

    public CommandState StoredState(string id) => Store.Find(id)!.Value.Entry.State;

    public CommandState[] StoredHistory(string id) => [.. Store.Find(id)!.Value.Transitions.Select(static t => t.State)];

    public async ValueTask DisposeAsync()
    {
        await Loop.StopAsync(CancellationToken.None);
        Loop.Dispose();
        await Store.DisposeAsync();
        await _devices.DisposeAsync();
        if (_ownsDirectory)
        {
            Directory.Delete(_directory, recursive: true);
        }
    }

    /// <summary>Checks, as each transition is announced, that the store has it already.</summary>
    private sealed class StoredFirstSink(CommandStore store, CommandLoopHarness harness) : IPushEventSink
    {
        public void OnCommandTransition(CommandTransition transition)
        {
            if (store.Find(transition.CommandId) is not { } stored || !stored.Transitions.Any(t => t.State == transition.State))
            {
                lock (harness.AnnouncedBeforeStored)
                {
                    harness.AnnouncedBeforeStored.Add(transition);
                }
            }
        }

        public void OnPresenceChanged(DevicePresence presence)
        {
            lock (harness.Presence)
            {
                harness.Presence.Add(presence);
            }
        }
    }
}

/// <summary>
/// The broker as the command loop sees it (<see cref="IMqttDeviceChannel"/>): a PUBLISH goes to a device
/// while it is connected, unless it is set to refuse (online, its session queue full). Every attempt is
/// counted, every PUBLISH kept.
/// </summary>
internal sealed class FakeDeviceChannel : IMqttDeviceChannel
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, bool> _online = new(StringComparer.Ordinal);
    private readonly List<(string Device, StoredMessage Message, CommandEntry Entry)> _published = [];
    private readonly List<(Func<bool> Done, TaskCompletionSource Signal)> _waiting = [];
    private int _attempts;

    /// <summary>Every PUBLISH that went, in order.</summary>
    public IReadOnlyList<(string Device, StoredMessage Message, CommandEntry Entry)> Published
    {
        get
        {
            lock (_gate)
            {
                return [.. _published];
            }
        }
    }

    public int Attempts
    {
        get
        {
            lock (_gate)
            {
                return _attempts;
            }
        }
    }

    /// <summary>The command ids that went to <paramref name="device"/>, in order.</summary>
    public List<string> PublishedIds(string device) => [.. Published.Where(p => p.Device == device).Select(static p => p.Entry.Id)];

    public void Connect(string device) => Set(device, takes: true);

    /// <summary>Online, but every PUBLISH is refused.</summary>
    public void ConnectRefusing(string device) => Set(device, takes: false);

    public void Disconnect(string device)
    {
        lock (_gate)
        {
            _online.Remove(device);
        }
    }

    public Task WaitForPublishedAsync(int count) => WaitAsync(() => _published.Count >= count);

    public Task WaitForAttemptsAsync(int count) => WaitAsync(() => _attempts >= count);

    public bool PublishToClient(string clientId, StoredMessage message, object? tag)
    {
        lock (_gate)
        {
            _attempts++;
            var goes = _online.GetValueOrDefault(clientId);
            if (goes)
            {
                _published.Add((clientId, message, (CommandEntry)tag!));
            }

            foreach (var waiter in _waiting.Where(static w => w.Done()).ToList())
            {
                _waiting.Remove(waiter);
                waiter.Signal.TrySetResult();
            }

            return goes;
        }
    }

    public bool IsDeviceSession(string clientId) => true;

    public bool IsOnline(string clientId)
    {
        lock (_gate)
        {
            return _online.ContainsKey(clientId);
        }
    }

    public IPEndPoint? LocalEndPointOf(string clientId) => null;

    private void Set(string device, bool takes)
    {
        lock (_gate)
        {
            _online[device] = takes;
        }
    }

    private Task WaitAsync(Func<bool> done)
    {
        lock (_gate)
        {
            if (done())
            {
                return Task.CompletedTask;
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting.Add((done, signal));
            return signal.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }
}
