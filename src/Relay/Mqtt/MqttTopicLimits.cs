using System.Buffers;
using System.Text;
using Relay.Server.Primitives;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>
/// <c>Relay:Mqtt:MaxTopicLevels</c> and <c>MaxTopicLength</c>: checked on every topic name and filter a
/// client sends (PUBLISH, topic alias, SUBSCRIBE, will) and on every row restored at start, before the
/// subscription and retained trees ever see it. A refusal is counted and logged at most once per 10 s per
/// limit, with the topic shortened and escaped.
/// </summary>
internal sealed partial class MqttTopicLimits
{
    private readonly int _maxLevels;
    private readonly int _maxLength;
    private readonly MqttMetrics _metrics;
    private readonly ILogger _logger;
    private readonly LogThrottle _throttle;

    public MqttTopicLimits(MqttOptions options, MqttMetrics metrics, ILogger logger, TimeProvider time)
    {
        _maxLevels = options.MaxTopicLevels;
        _maxLength = options.MaxTopicLength;
        _metrics = metrics;
        _logger = logger;
        _throttle = new LogThrottle(2, TimeSpan.FromSeconds(10), time);
    }

    /// <summary>The limit <paramref name="topicUtf8"/> breaks, or null. For a <c>$share/g/</c> filter the levels of the inner filter count.</summary>
    public MqttLimit? Check(ReadOnlySpan<byte> topicUtf8)
    {
        if (topicUtf8.Length > _maxLength)
        {
            return MqttLimit.TopicLength;
        }

        var levels = MqttTopic.TryParseShared(topicUtf8, out _, out var inner) ? inner : topicUtf8;
        return MqttTopic.CountLevels(levels) > _maxLevels ? MqttLimit.TopicLevels : null;
    }

    /// <inheritdoc cref="Check(ReadOnlySpan{byte})"/>
    public MqttLimit? Check(in ReadOnlySequence<byte> topicUtf8)
    {
        if (topicUtf8.Length > _maxLength)
        {
            return MqttLimit.TopicLength;
        }

        if (topicUtf8.IsSingleSegment)
        {
            return Check(topicUtf8.FirstSpan);
        }

        // Split across segments: at most MaxTopicLength bytes, checked above.
        var copy = ArrayPool<byte>.Shared.Rent((int)topicUtf8.Length);
        try
        {
            topicUtf8.CopyTo(copy);
            return Check(copy.AsSpan(0, (int)topicUtf8.Length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }

    /// <inheritdoc cref="Check(ReadOnlySpan{byte})"/>
    public MqttLimit? Check(string topic)
    {
        if (topic.Length > _maxLength || Encoding.UTF8.GetByteCount(topic) > _maxLength)
        {
            return MqttLimit.TopicLength;
        }

        ReadOnlySpan<char> levels = MqttTopic.TryParseShared(topic, out _, out var inner) ? inner : topic;
        return MqttTopic.CountLevels(levels) > _maxLevels ? MqttLimit.TopicLevels : null;
    }

    /// <summary>Counts the refusal and logs it (throttled). <paramref name="what"/> says where: "PUBLISH", "SUBSCRIBE", "will", "restore".</summary>
    public void Refused(MqttLimit limit, string what, string? clientId, ReadOnlySpan<byte> topicUtf8)
    {
        if (ShouldLog(limit, out var suppressed))
        {
            Log(limit, what, clientId, LogText.Safe(topicUtf8), suppressed);
        }
    }

    /// <inheritdoc cref="Refused(MqttLimit, string, string?, ReadOnlySpan{byte})"/>
    public void Refused(MqttLimit limit, string what, string? clientId, in ReadOnlySequence<byte> topicUtf8)
    {
        if (ShouldLog(limit, out var suppressed))
        {
            Span<byte> head = stackalloc byte[LogText.MaxLength * 4];
            var shown = topicUtf8.Length > head.Length ? topicUtf8.Slice(0, head.Length) : topicUtf8;
            shown.CopyTo(head);
            Log(limit, what, clientId, LogText.Safe(head[..(int)shown.Length]), suppressed);
        }
    }

    /// <inheritdoc cref="Refused(MqttLimit, string, string?, ReadOnlySpan{byte})"/>
    public void Refused(MqttLimit limit, string what, string? clientId, string topic)
    {
        if (ShouldLog(limit, out var suppressed))
        {
            Log(limit, what, clientId, LogText.Safe(topic), suppressed);
        }
    }

    private bool ShouldLog(MqttLimit limit, out long suppressed)
    {
        _metrics.LimitHit(limit);
        return _throttle.TryEnter(limit == MqttLimit.TopicLevels ? 0 : 1, out suppressed);
    }

    private void Log(MqttLimit limit, string what, string? clientId, string safeTopic, long suppressed) =>
        LogRefused(what, LogText.Safe(clientId), LimitKey(limit), limit == MqttLimit.TopicLevels ? _maxLevels : _maxLength, safeTopic, suppressed);

    private static string LimitKey(MqttLimit limit) => limit == MqttLimit.TopicLevels ? "Relay:Mqtt:MaxTopicLevels" : "Relay:Mqtt:MaxTopicLength";

    [LoggerMessage(EventId = 5040, Level = LogLevel.Warning, Message = "MQTT: {What} from client {ClientId} refused: topic over {Key} ({Limit}): {Topic} ({Suppressed} more since the last such line)")]
    private partial void LogRefused(string what, string clientId, string key, int limit, string topic, long suppressed);
}
