using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Relay.Server.Events;
using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Twins;

/// <summary>A device's state as the API shows it: both documents with their versions, and the delta between them.</summary>
internal sealed record TwinView(
    string Device,
    JsonObject Desired,
    long DesiredVersion,
    DateTimeOffset? DesiredAt,
    JsonObject Reported,
    long ReportedVersion,
    DateTimeOffset? ReportedAt,
    JsonObject Delta);

/// <summary>How an update ended.</summary>
internal enum TwinUpdateStatus
{
    Applied,

    /// <summary><c>If-Match</c> named another desired version; nothing changed.</summary>
    VersionMismatch,

    /// <summary>The patch is not a JSON object (see the problem text).</summary>
    Invalid,

    /// <summary>The patch, or the document it would make, is over a <c>Relay:Twins</c> limit.</summary>
    LimitHit,

    /// <summary><see cref="TwinOptions.MaxPendingUpdates"/> updates wait already.</summary>
    Busy,
}

/// <summary>An update's outcome; <see cref="Twin"/> is the state after it (Applied) or as it is (VersionMismatch).</summary>
internal readonly record struct TwinUpdate(TwinUpdateStatus Status, TwinView? Twin = null, TwinLimit Limit = default, string? Problem = null);

/// <summary>
/// Device state (the "twin"): per device a <c>desired</c> document the back end sets and a <c>reported</c> one the
/// device publishes, each changed by JSON Merge Patch (RFC 7386) and versioned. The one owner of every change:
/// updates run one at a time under a gate (read, merge, check, commit, then tell), at most
/// <see cref="TwinOptions.MaxPendingUpdates"/> waiting. After a commit that changes the delta, the delta goes
/// to the device on <c>devices/{id}/twin/delta</c> (QoS 1, through its own session) and a
/// <see cref="RelayEventKind.Twin"/> event is published. As a hosted service it also sends the delta a device
/// is due when it connects or subscribes, from a bounded queue (the broker's read loops only post to it).
/// </summary>
internal sealed partial class TwinService : BackgroundService
{
    public const string TopicPrefix = "devices/";
    public const string ReportedSuffix = "/twin/reported";
    public const string DeltaSuffix = "/twin/delta";

    private const int DeltaQueueLength = 4096;

    private static readonly MqttMessageProperties JsonProperties = new(1, "application/json", null, null, null);

    private readonly TwinStore _store;
    private readonly TwinOptions _options;
    private readonly TwinMetrics _metrics;
    private readonly IRelayEvents _events;
    private readonly IMqttDeviceChannel _devices;
    private readonly TimeProvider _time;
    private readonly ILogger<TwinService> _logger;
    private readonly LogThrottle _throttle;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Channel<string> _deltaRequests =
        Channel.CreateBounded<string>(new BoundedChannelOptions(DeltaQueueLength) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private int _pending;

    public TwinService(
        TwinStore store,
        TwinOptions options,
        TwinMetrics metrics,
        IRelayEvents events,
        IMqttDeviceChannel devices,
        TimeProvider time,
        ILogger<TwinService> logger)
    {
        _store = store;
        _options = options;
        _metrics = metrics;
        _events = events;
        _devices = devices;
        _time = time;
        _logger = logger;
        _throttle = new LogThrottle(2, TimeSpan.FromSeconds(10), time);
    }

    public TwinOptions Options => _options;

    /// <summary>An API body over <see cref="TwinOptions.MaxDocumentBytes"/>, refused before it was read whole.</summary>
    public void CountBodyTooLarge() => _metrics.CountLimit(TwinLimit.DocumentBytes);

    public static string ReportedTopic(string device) => TopicPrefix + device + ReportedSuffix;

    public static string DeltaTopic(string device) => TopicPrefix + device + DeltaSuffix;

    /// <summary>The device of a <c>devices/{id}/twin/reported</c> topic (id one non-empty level); false for any other topic.</summary>
    public static bool TryGetReportingDevice(string topic, out string device)
    {
        device = string.Empty;
        if (!topic.StartsWith(TopicPrefix, StringComparison.Ordinal) || !topic.EndsWith(ReportedSuffix, StringComparison.Ordinal)
            || topic.Length <= TopicPrefix.Length + ReportedSuffix.Length)
        {
            return false;
        }

        var id = topic[TopicPrefix.Length..^ReportedSuffix.Length];
        if (id.Contains('/', StringComparison.Ordinal))
        {
            return false;
        }

        device = id;
        return true;
    }

    /// <summary>The device's state now (empty documents at version 0 when it has none).</summary>
    public TwinView Get(string device) => View(_store.Load(device) ?? TwinRecord.Empty(device));

    /// <summary>
    /// Sets the desired document: <paramref name="replace"/> (PUT) makes <paramref name="body"/> the document,
    /// otherwise (PATCH) merges it in. <paramref name="ifMatch"/>, when given, must be the current desired version.
    /// </summary>
    public Task<TwinUpdate> SetDesiredAsync(string device, ReadOnlyMemory<byte> body, bool replace, long? ifMatch, CancellationToken cancellationToken) =>
        UpdateAsync(device, body, TwinDocument.Desired, replace, ifMatch, cancellationToken);

    /// <summary>Merges a device's report into its reported document; returns once committed.</summary>
    public Task<TwinUpdate> ReportAsync(string device, ReadOnlyMemory<byte> patch, CancellationToken cancellationToken) =>
        UpdateAsync(device, patch, TwinDocument.Reported, replace: false, ifMatch: null, cancellationToken);

    /// <summary>The device was deleted: its documents go, so a device registered again under the id starts empty.</summary>
    public async Task ForgetAsync(string device, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _store.Delete(device);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The device connected or subscribed to its delta topic: queues sending it its delta (if any). Called on the
    /// broker's read loops, so it only posts; a full queue is counted (the device gets the delta on the next change).
    /// </summary>
    public void RequestDelta(string device)
    {
        if (!_deltaRequests.Writer.TryWrite(device))
        {
            _metrics.CountDeltaRequestDropped();
            if (_throttle.TryEnter(1, out var suppressed))
            {
                LogDeltaRequestsDropped(DeltaQueueLength, suppressed);
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _deltaRequests.Reader;
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var device))
                {
                    try
                    {
                        var twin = Get(device);
                        if (twin.Delta.Count > 0)
                        {
                            SendDelta(device, twin.DesiredVersion, TwinJson.ToUtf8(twin.Delta));
                        }
                    }
                    catch (Microsoft.Data.Sqlite.SqliteException e)
                    {
                        LogReadFailed(e, LogText.Safe(device));
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override void Dispose()
    {
        base.Dispose();
        _gate.Dispose();
    }

    private async Task<TwinUpdate> UpdateAsync(
        string device, ReadOnlyMemory<byte> body, TwinDocument document, bool replace, long? ifMatch, CancellationToken cancellationToken)
    {
        // Parsed before the gate: a large patch costs its sender's time, not everyone's.
        switch (TwinJson.Parse(body.Span, _options.Limits, out var patch, out var limit, out var problem))
        {
            case TwinParseStatus.LimitHit:
                _metrics.CountLimit(limit);
                return new TwinUpdate(TwinUpdateStatus.LimitHit, Limit: limit, Problem: problem);
            case TwinParseStatus.InvalidData:
                return new TwinUpdate(TwinUpdateStatus.Invalid, Problem: problem);
        }

        if (Interlocked.Increment(ref _pending) > _options.MaxPendingUpdates)
        {
            Interlocked.Decrement(ref _pending);
            _metrics.CountLimit(TwinLimit.Pending);
            if (_throttle.TryEnter(0, out var suppressed))
            {
                LogBusy(_options.MaxPendingUpdates, suppressed);
            }

            var busy = $"{_options.MaxPendingUpdates} updates are waiting already (Relay:Twins:MaxPendingUpdates)";
            return new TwinUpdate(TwinUpdateStatus.Busy, Limit: TwinLimit.Pending, Problem: busy);
        }

        try
        {
            await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                return Apply(device, patch!, document, replace, ifMatch);
            }
            finally
            {
                _gate.Release();
            }
        }
        finally
        {
            Interlocked.Decrement(ref _pending);
        }
    }

    private TwinUpdate Apply(string device, JsonObject patch, TwinDocument document, bool replace, long? ifMatch)
    {
        var record = _store.LoadForUpdate(device) ?? TwinRecord.Empty(device);
        if (ifMatch is { } expected && expected != record.DesiredVersion)
        {
            return new TwinUpdate(TwinUpdateStatus.VersionMismatch, View(record));
        }

        var desired = Stored(record.Desired);
        var reported = Stored(record.Reported);
        var before = TwinJson.ToUtf8(TwinJson.Delta(desired, reported));
        var target = document == TwinDocument.Reported ? reported : replace ? new JsonObject() : desired;
        TwinJson.MergePatch(target, patch);
        var text = TwinJson.ToUtf8(target);
        if (TwinJson.Check(target, text.Length, _options.Limits, out var problem) is { } limit)
        {
            _metrics.CountLimit(limit);
            return new TwinUpdate(TwinUpdateStatus.LimitHit, Limit: limit, Problem: problem);
        }

        var now = _time.GetUtcNow();
        if (document == TwinDocument.Desired)
        {
            desired = target;
            record = record with { Desired = Encoding.UTF8.GetString(text), DesiredVersion = record.DesiredVersion + 1, DesiredAt = now };
        }
        else
        {
            record = record with { Reported = Encoding.UTF8.GetString(text), ReportedVersion = record.ReportedVersion + 1, ReportedAt = now };
        }

        _store.Save(record);
        _metrics.CountUpdate(document);

        var delta = TwinJson.Delta(desired, reported);
        var view = new TwinView(device, desired, record.DesiredVersion, record.DesiredAt, reported, record.ReportedVersion, record.ReportedAt, delta);
        var after = TwinJson.ToUtf8(delta);
        if (delta.Count > 0 && !after.AsSpan().SequenceEqual(before))
        {
            SendDelta(device, record.DesiredVersion, after);
        }

        if (_events.HasSubscribers(RelayEventKind.Twin))
        {
            _events.Publish(new RelayEvent(RelayEventKind.Twin, device, now, EventData(document, view, after)));
        }

        return new TwinUpdate(TwinUpdateStatus.Applied, view);
    }

    /// <summary>
    /// Hands <c>{"version": desired version, "state": delta}</c> to the device's session if it is online and
    /// subscribed; otherwise it waits for the device's next connect or subscribe, when the delta is sent again.
    /// </summary>
    private void SendDelta(string device, long version, byte[] delta)
    {
        var buffer = new ArrayBufferWriter<byte>(delta.Length + 40);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteNumber("version", version);
            writer.WritePropertyName("state");
            writer.WriteRawValue(delta, skipInputValidation: true);
            writer.WriteEndObject();
        }

        var message = new StoredMessage(DeltaTopic(device), buffer.WrittenSpan.ToArray(), 1, false, null, JsonProperties);
        if (_devices.PublishToClient(device, message, null))
        {
            _metrics.CountDeltaSent();
        }
    }

    private static byte[] EventData(TwinDocument document, TwinView view, byte[] delta)
    {
        var buffer = new ArrayBufferWriter<byte>(delta.Length + 96);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("document", document == TwinDocument.Desired ? "desired" : "reported");
            writer.WriteNumber("desiredVersion", view.DesiredVersion);
            writer.WriteNumber("reportedVersion", view.ReportedVersion);
            writer.WritePropertyName("delta");
            writer.WriteRawValue(delta, skipInputValidation: true);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static TwinView View(TwinRecord record)
    {
        var desired = Stored(record.Desired);
        var reported = Stored(record.Reported);
        var delta = TwinJson.Delta(desired, reported);
        return new TwinView(record.Device, desired, record.DesiredVersion, record.DesiredAt, reported, record.ReportedVersion, record.ReportedAt, delta);
    }

    private static JsonObject Stored(string json) =>
        TwinJson.Parse(Encoding.UTF8.GetBytes(json), TwinLimits.Stored, out var document, out _, out var problem) == TwinParseStatus.Done
            ? document!
            : throw new InvalidDataException($"A stored device state document is damaged: {problem}.");

    [LoggerMessage(
        EventId = 9101,
        Level = LogLevel.Warning,
        Message = "Twins: an update was refused, {Limit} wait already (Relay:Twins:MaxPendingUpdates); {Suppressed} more since the last line")]
    private partial void LogBusy(int limit, long suppressed);

    [LoggerMessage(
        EventId = 9102,
        Level = LogLevel.Warning,
        Message = "Twins: {Limit} deltas wait to be sent; one due on a connect was dropped (sent on the next change or connect); "
            + "{Suppressed} more since the last line")]
    private partial void LogDeltaRequestsDropped(int limit, long suppressed);

    [LoggerMessage(EventId = 9103, Level = LogLevel.Error, Message = "Twins: reading the state of {Device} failed")]
    private partial void LogReadFailed(Exception exception, string device);
}
