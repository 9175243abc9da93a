namespace Relay.Protocol.Mqtt;

/// <summary>Topic names and filters (§4.7) and shared subscriptions (§4.8.2): pure, allocation-free.</summary>
public static class MqttTopic
{
    /// <summary>Not empty, no '+' or '#', no U+0000, at most 65,535 UTF-8 bytes ([MQTT-4.7.3-1], [MQTT-3.3.2-2]).</summary>
    public static bool IsValidTopicName(ReadOnlySpan<char> topic) => throw new NotImplementedException();

    /// <summary>UTF-8 overload of <see cref="IsValidTopicName(ReadOnlySpan{char})"/>; the bytes must already be valid UTF-8.</summary>
    public static bool IsValidTopicName(ReadOnlySpan<byte> topicUtf8) => throw new NotImplementedException();

    /// <summary>Not empty; '#' only last and alone in its level; '+' alone in its level ([MQTT-4.7.1-1..3]).</summary>
    public static bool IsValidTopicFilter(ReadOnlySpan<char> filter) => throw new NotImplementedException();

    /// <summary>UTF-8 overload of <see cref="IsValidTopicFilter(ReadOnlySpan{char})"/>.</summary>
    public static bool IsValidTopicFilter(ReadOnlySpan<byte> filterUtf8) => throw new NotImplementedException();

    /// <summary>Whether <paramref name="topic"/> matches <paramref name="filter"/>; topics starting with '$' are not matched by a leading wildcard ([MQTT-4.7.2-1]).</summary>
    public static bool Matches(ReadOnlySpan<char> filter, ReadOnlySpan<char> topic) => throw new NotImplementedException();

    /// <summary>UTF-8 overload of <see cref="Matches(ReadOnlySpan{char}, ReadOnlySpan{char})"/>.</summary>
    public static bool Matches(ReadOnlySpan<byte> filterUtf8, ReadOnlySpan<byte> topicUtf8) => throw new NotImplementedException();

    /// <summary>Splits "$share/{group}/{filter}" (§4.8.2); false when not a shared filter or malformed.</summary>
    public static bool TryParseShared(ReadOnlySpan<char> filter, out ReadOnlySpan<char> group, out ReadOnlySpan<char> innerFilter) => throw new NotImplementedException();

    /// <summary>UTF-8 overload of <see cref="TryParseShared(ReadOnlySpan{char}, out ReadOnlySpan{char}, out ReadOnlySpan{char})"/>.</summary>
    public static bool TryParseShared(ReadOnlySpan<byte> filterUtf8, out ReadOnlySpan<byte> group, out ReadOnlySpan<byte> innerFilter) => throw new NotImplementedException();
}
