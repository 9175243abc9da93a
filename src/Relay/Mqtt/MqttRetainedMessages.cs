namespace Relay.Server.Mqtt;

/// <summary>
/// Retained messages (MQTT 5.0 §3.3.1.3): one per topic, bounded by Relay:Mqtt:MaxRetainedMessages, persisted
/// in <see cref="IMqttRetainedStore"/> and restored from it at start. Owns the retained tree and the lock
/// that makes it single-threaded; nothing is called under that lock.
/// </summary>
internal sealed partial class MqttRetainedMessages
{
    private readonly Lock _sync = new();
    private readonly MqttRetainedTree _tree = new();
    private readonly int _maxRetained;
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

    /// <summary>Stores or clears a topic's retained message [MQTT-3.3.1-5], [MQTT-3.3.1-10/11]; bounded by MaxRetainedMessages.</summary>
    public async ValueTask SetAsync(StoredMessage message, bool persist, CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            if (message.Payload.IsEmpty)
            {
                // [MQTT-3.3.1-10]: an empty retained payload removes the retained message and is not stored.
                _tree.Remove(message.Topic);
            }
            else if (!_tree.Contains(message.Topic) && _tree.Count >= _maxRetained)
            {
                _metrics.LimitHit(MqttLimit.RetainedMessages);
                _metrics.Drop(MqttDropReason.RetainedLimit);
                if (_logThrottle.TryEnter(0, out var suppressed))
                {
                    LogRetainedLimit(Primitives.LogText.Safe(message.Topic), _maxRetained, suppressed);
                }

                return;
            }
            else
            {
                _tree.Set(message);
            }

            _metrics.SetRetained(_tree.Count);
        }

        if (persist)
        {
            await _store.SetAsync(message, cancellationToken).ConfigureAwait(false);
        }
    }

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

                _tree.Set(message);
            }

            _metrics.SetRetained(_tree.Count);
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

    [LoggerMessage(EventId = 5021, Level = LogLevel.Information, Message = "MQTT: retained message for {Topic} refused: {Limit} retained messages already (Relay:Mqtt:MaxRetainedMessages) ({Suppressed} more since the last such line)")]
    private partial void LogRetainedLimit(string topic, int limit, long suppressed);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Warning, Message = "MQTT: skipped and deleted {Count} stored {What} whose topic breaks Relay:Mqtt:MaxTopicLevels or MaxTopicLength")]
    private partial void LogRestoreSkipped(int count, string what);
}
