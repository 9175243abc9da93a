namespace Relay.Server.Mqtt;

/// <summary>
/// Retained messages (MQTT 5.0 §3.3.1.3): one per topic, persisted in <see cref="IMqttRetainedStore"/> and
/// restored from it at start. They all live in memory, so they are bounded in number
/// (Relay:Mqtt:MaxRetainedMessages), in bytes (MaxRetainedBytes, payload plus topic) and per payload
/// (MaxRetainedPayloadBytes), and each is held by the client id that published it last, whose share is bounded
/// too (MaxRetainedMessagesPerClient, MaxRetainedBytesPerClient), so one client cannot take what the others
/// need (review H4). Owns the retained tree, the accounting and the lock that makes them single-threaded;
/// nothing is called under that lock.
/// </summary>
internal sealed partial class MqttRetainedMessages
{
    private readonly Lock _sync = new();
    private readonly MqttRetainedTree _tree = new();
    private readonly int _maxRetained;
    private readonly long _maxBytes;
    private readonly int _maxPayload;
    private readonly int _maxPerClient;
    private readonly long _maxBytesPerClient;

    // Bytes (payload plus topic) of every retained message, and per holding client id; an entry goes when its
    // client holds nothing, so the table is bounded by the number of retained messages.
    private readonly Dictionary<string, Usage> _byClient = new(StringComparer.Ordinal);
    private long _bytes;
    private readonly MqttMetrics _metrics;
    private readonly MqttTopicLimits _topicLimits;
    private readonly IMqttRetainedStore _store;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    // Refusals are the client's to cause: one line per 10 s (review M6).
    private readonly Primitives.LogThrottle _logThrottle = new(1);

    public MqttRetainedMessages(MqttOptions options, MqttMetrics metrics, MqttTopicLimits topicLimits, IMqttRetainedStore store, TimeProvider time, ILogger<MqttRetainedMessages> logger)
    {
        _maxRetained = options.MaxRetainedMessages;
        _maxBytes = options.MaxRetainedBytes;
        _maxPayload = options.MaxRetainedPayloadBytes;
        _maxPerClient = options.MaxRetainedMessagesPerClient;
        _maxBytesPerClient = options.MaxRetainedBytesPerClient;
        _metrics = metrics;
        _topicLimits = topicLimits;
        _store = store;
        _time = time;
        _logger = logger;
    }

    public int Count
    {
        get
        {
            lock (_sync)
            {
                return _tree.Count;
            }
        }
    }

    /// <summary>
    /// Stores or clears a topic's retained message [MQTT-3.3.1-5], [MQTT-3.3.1-10/11], held by
    /// <paramref name="publisherClientId"/>. False when a bound refused it (counted and logged here); the message
    /// the topic had stays.
    /// </summary>
    public async ValueTask<bool> SetAsync(StoredMessage message, string? publisherClientId, bool persist, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!message.Payload.IsEmpty && message.Publisher != publisherClientId)
        {
            message = message with { Publisher = publisherClientId };
        }

        MqttLimit? refused;
        lock (_sync)
        {
            var old = _tree.Get(message.Topic);
            if (message.Payload.IsEmpty)
            {
                // [MQTT-3.3.1-10]: an empty retained payload removes the retained message and is not stored.
                refused = null;
                if (old is not null)
                {
                    _tree.Remove(message.Topic);
                    ReleaseLocked(old);
                }
            }
            else if ((refused = CheckLocked(message, old)) is null)
            {
                if (old is not null)
                {
                    ReleaseLocked(old);
                }

                _tree.Set(message);
                ChargeLocked(message);
            }

            _metrics.SetRetained(_tree.Count);
        }

        if (refused is { } limit)
        {
            _metrics.LimitHit(limit);
            _metrics.Drop(MqttDropReason.RetainedLimit);
            if (_logThrottle.TryEnter(0, out var suppressed))
            {
                LogRetainedRefused(Primitives.LogText.Safe(message.Topic), Primitives.LogText.Safe(publisherClientId), LimitKey(limit), suppressed);
            }

            return false;
        }

        if (persist)
        {
            await _store.SetAsync(message, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    private static long Size(StoredMessage message) => message.Payload.Length + (long)message.Topic.Length;

    /// <summary>Which bound, if any, storing <paramref name="message"/> in place of <paramref name="old"/> would break.</summary>
    private MqttLimit? CheckLocked(StoredMessage message, StoredMessage? old)
    {
        if (message.Payload.Length > _maxPayload)
        {
            return MqttLimit.RetainedPayloadSize;
        }

        if (old is null && _tree.Count >= _maxRetained)
        {
            return MqttLimit.RetainedMessages;
        }

        var size = Size(message);
        var freed = old is null ? 0 : Size(old);
        if (_bytes - freed + size > _maxBytes)
        {
            return MqttLimit.RetainedBytes;
        }

        if (message.Publisher is { } holder)
        {
            var usage = _byClient.GetValueOrDefault(holder);
            var replacesOwn = old is not null && old.Publisher == holder;
            if (usage.Count + (replacesOwn ? 0 : 1) > _maxPerClient || usage.Bytes - (replacesOwn ? freed : 0) + size > _maxBytesPerClient)
            {
                return MqttLimit.RetainedPerClient;
            }
        }

        return null;
    }

    private void ChargeLocked(StoredMessage message)
    {
        var size = Size(message);
        _bytes += size;
        if (message.Publisher is { } holder)
        {
            ref var usage = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_byClient, holder, out _);
            usage.Count++;
            usage.Bytes += size;
        }
    }

    private void ReleaseLocked(StoredMessage message)
    {
        var size = Size(message);
        _bytes -= size;
        if (message.Publisher is { } holder && _byClient.TryGetValue(holder, out var usage))
        {
            if (usage.Count <= 1)
            {
                _byClient.Remove(holder);
            }
            else
            {
                _byClient[holder] = new Usage { Count = usage.Count - 1, Bytes = usage.Bytes - size };
            }
        }
    }

    private static string LimitKey(MqttLimit limit) => limit switch
    {
        MqttLimit.RetainedPayloadSize => "Relay:Mqtt:MaxRetainedPayloadBytes",
        MqttLimit.RetainedBytes => "Relay:Mqtt:MaxRetainedBytes",
        MqttLimit.RetainedPerClient => "Relay:Mqtt:MaxRetainedMessagesPerClient or MaxRetainedBytesPerClient",
        _ => "Relay:Mqtt:MaxRetainedMessages",
    };

    /// <summary>Retained messages whose topic matches <paramref name="filter"/> (§3.8.4, sent after SUBSCRIBE).</summary>
    public List<StoredMessage> Match(string filter)
    {
        var now = _time.GetUtcNow();
        var result = new List<StoredMessage>();
        lock (_sync)
        {
            _tree.Match(filter, result);
        }

        // MQTT 5.0 §3.3.2.3.3: a retained message past its expiry is no longer sent.
        result.RemoveAll(m => m.ExpiresAt is { } expires && expires <= now);
        return result;
    }

    /// <summary>
    /// Loads the stored retained messages at start; returns how many the store held. A row whose topic breaks
    /// the topic limits is skipped and deleted.
    /// </summary>
    public async ValueTask<int> RestoreAsync(CancellationToken cancellationToken)
    {
        var retained = await _store.LoadAllAsync(cancellationToken).ConfigureAwait(false);
        List<StoredMessage>? overLimit = null;
        var overQuota = 0;
        lock (_sync)
        {
            foreach (var message in retained)
            {
                // A row stored before the topic limits existed (or under looser ones) must not reach the
                // tree: one deep topic restored is a crash on the first wildcard SUBSCRIBE (review C1).
                if (_topicLimits.Check(message.Topic) is { } limit)
                {
                    _topicLimits.Refused(limit, "restore of a retained message", null, message.Topic);
                    (overLimit ??= []).Add(message);
                    continue;
                }

                // Bounds lowered while the messages were stored: what fits is loaded, the rest stays in the
                // store (a later raise brings it back; a new PUBLISH to its topic replaces it) and is counted.
                var old = _tree.Get(message.Topic);
                if (CheckLocked(message, old) is { } quota)
                {
                    _metrics.LimitHit(quota);
                    overQuota++;
                    continue;
                }

                _tree.Set(message);
                ChargeLocked(message);
            }

            _metrics.SetRetained(_tree.Count);
        }

        if (overQuota > 0)
        {
            LogRestoreOverQuota(overQuota);
        }

        if (overLimit is not null)
        {
            LogRestoreSkipped(overLimit.Count, "retained message(s)");
            foreach (var message in overLimit)
            {
                // An empty payload deletes the row [MQTT-3.3.1-6], so the next start does not meet it again.
                await _store.SetAsync(message with { Payload = ReadOnlyMemory<byte>.Empty }, cancellationToken).ConfigureAwait(false);
            }
        }

        return retained.Count;
    }

    [LoggerMessage(EventId = 5021, Level = LogLevel.Information, Message = "MQTT: retained message for {Topic} from {ClientId} refused: over {Key} ({Suppressed} more since the last such line)")]
    private partial void LogRetainedRefused(string topic, string clientId, string key, long suppressed);

    [LoggerMessage(EventId = 5005, Level = LogLevel.Warning, Message = "MQTT: {Count} stored retained message(s) not loaded: over Relay:Mqtt:MaxRetainedMessages, MaxRetainedBytes, MaxRetainedPayloadBytes or the per-client bounds; they stay stored")]
    private partial void LogRestoreOverQuota(int count);

    private struct Usage
    {
        public int Count;
        public long Bytes;
    }

    [LoggerMessage(EventId = 5004, Level = LogLevel.Warning, Message = "MQTT: skipped and deleted {Count} stored {What} whose topic breaks Relay:Mqtt:MaxTopicLevels or MaxTopicLength")]
    private partial void LogRestoreSkipped(int count, string what);
}
