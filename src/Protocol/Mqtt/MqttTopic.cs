using System.Numerics;

namespace Relay.Protocol.Mqtt;

/// <summary>
/// Topic names and filters (§4.7) and shared subscriptions (§4.8.2): pure, allocation-free. Each method
/// has a UTF-16 and a UTF-8 overload; the separators and wildcards are ASCII, so both walk the same way.
/// </summary>
public static class MqttTopic
{
    /// <summary>The most bytes a UTF-8 Encoded String can hold (§1.5.4).</summary>
    public const int MaxLength = 65_535;

    /// <summary>Not empty, no '+' or '#', no U+0000, well-formed, at most 65,535 UTF-8 bytes ([MQTT-4.7.3-1], [MQTT-3.3.2-2], [MQTT-4.7.0-1]).</summary>
    public static bool IsValidTopicName(ReadOnlySpan<char> topic)
        => !topic.IsEmpty && topic.IndexOfAny('+', '#') < 0 && IsEncodable(topic);

    /// <summary>UTF-8 overload of <see cref="IsValidTopicName(ReadOnlySpan{char})"/>; the bytes must already be valid UTF-8.</summary>
    public static bool IsValidTopicName(ReadOnlySpan<byte> topicUtf8)
        => !topicUtf8.IsEmpty && topicUtf8.Length <= MaxLength && topicUtf8.IndexOfAny((byte)'+', (byte)'#', (byte)0) < 0;

    /// <summary>
    /// Not empty ([MQTT-4.7.3-1]); '#' only last and alone in its level ([MQTT-4.7.1-1]); '+' alone in its
    /// level ([MQTT-4.7.1-2]); no U+0000 and at most 65,535 UTF-8 bytes. A "$share/" filter must also have a
    /// non-empty share name without wildcards and a valid inner filter (§4.8.2, [MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    /// </summary>
    public static bool IsValidTopicFilter(ReadOnlySpan<char> filter)
        => IsEncodable(filter) && IsValidFilter(filter) && IsValidSharedIfShared(filter);

    /// <summary>UTF-8 overload of <see cref="IsValidTopicFilter(ReadOnlySpan{char})"/>; the bytes must already be valid UTF-8.</summary>
    public static bool IsValidTopicFilter(ReadOnlySpan<byte> filterUtf8)
        => filterUtf8.Length <= MaxLength && !filterUtf8.Contains((byte)0) && IsValidFilter(filterUtf8) && IsValidSharedIfShared(filterUtf8);

    /// <summary>
    /// Levels in a topic name or filter: separators plus one, an empty level being a level (§4.7.1.1). A
    /// server compares it with its own limit before it walks a tree by level.
    /// </summary>
    public static int CountLevels(ReadOnlySpan<byte> topicUtf8) => topicUtf8.Count((byte)'/') + 1;

    /// <summary>UTF-16 overload of <see cref="CountLevels(ReadOnlySpan{byte})"/>.</summary>
    public static int CountLevels(ReadOnlySpan<char> topic) => topic.Count('/') + 1;

    /// <summary>
    /// Whether <paramref name="topic"/> matches <paramref name="filter"/> (§4.7.1): '+' matches one level,
    /// a trailing '#' the parent level and any number of children. A topic starting with '$' is not matched
    /// by a filter starting with a wildcard ([MQTT-4.7.2-1]). Both arguments must be valid.
    /// </summary>
    public static bool Matches(ReadOnlySpan<char> filter, ReadOnlySpan<char> topic) => Match(filter, topic);

    /// <summary>UTF-8 overload of <see cref="Matches(ReadOnlySpan{char}, ReadOnlySpan{char})"/>.</summary>
    public static bool Matches(ReadOnlySpan<byte> filterUtf8, ReadOnlySpan<byte> topicUtf8) => Match(filterUtf8, topicUtf8);

    /// <summary>
    /// Splits "$share/{ShareName}/{filter}" (§4.8.2). False when <paramref name="filter"/> is not a shared
    /// subscription, or its ShareName is empty or holds '+', '#' ([MQTT-4.8.2-1], [MQTT-4.8.2-2]), or the
    /// inner filter is missing.
    /// </summary>
    public static bool TryParseShared(ReadOnlySpan<char> filter, out ReadOnlySpan<char> group, out ReadOnlySpan<char> innerFilter)
        => TrySplitShared(filter, out group, out innerFilter);

    /// <summary>UTF-8 overload of <see cref="TryParseShared(ReadOnlySpan{char}, out ReadOnlySpan{char}, out ReadOnlySpan{char})"/>.</summary>
    public static bool TryParseShared(ReadOnlySpan<byte> filterUtf8, out ReadOnlySpan<byte> group, out ReadOnlySpan<byte> innerFilter)
        => TrySplitShared(filterUtf8, out group, out innerFilter);

    // [MQTT-1.5.4-1], [MQTT-1.5.4-2]: a string is well-formed (no lone surrogate) and has no U+0000.
    private static bool IsEncodable(ReadOnlySpan<char> text)
    {
        if (text.Contains('\0'))
        {
            return false;
        }

        var bytes = 0L;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c < 0x80)
            {
                bytes++;
            }
            else if (c < 0x800)
            {
                bytes += 2;
            }
            else if (char.IsHighSurrogate(c))
            {
                if (i + 1 >= text.Length || !char.IsLowSurrogate(text[i + 1]))
                {
                    return false;
                }

                i++;
                bytes += 4;
            }
            else if (char.IsLowSurrogate(c))
            {
                return false;
            }
            else
            {
                bytes += 3;
            }
        }

        return bytes <= MaxLength;
    }

    private static bool IsValidFilter<T>(ReadOnlySpan<T> filter)
        where T : unmanaged, IBinaryInteger<T>
    {
        if (filter.IsEmpty)
        {
            return false;
        }

        var slash = T.CreateTruncating('/');
        var plus = T.CreateTruncating('+');
        var hash = T.CreateTruncating('#');
        for (var i = 0; i < filter.Length; i++)
        {
            var c = filter[i];
            if (c != plus && c != hash)
            {
                continue;
            }

            // A wildcard occupies a whole level: the previous character, if any, is a separator.
            if (i > 0 && filter[i - 1] != slash)
            {
                return false;
            }

            if (c == hash)
            {
                // [MQTT-4.7.1-1]: '#' is the last character.
                if (i != filter.Length - 1)
                {
                    return false;
                }
            }
            else if (i + 1 < filter.Length && filter[i + 1] != slash)
            {
                return false;
            }
        }

        return true;
    }

    private static bool IsValidSharedIfShared<T>(ReadOnlySpan<T> filter)
        where T : unmanaged, IBinaryInteger<T>
    {
        if (!StartsWithShare(filter))
        {
            return true;
        }

        return TrySplitShared(filter, out _, out var inner) && IsValidFilter(inner);
    }

    private static bool StartsWithShare<T>(ReadOnlySpan<T> filter)
        where T : unmanaged, IBinaryInteger<T>
    {
        ReadOnlySpan<byte> prefix = "$share/"u8;
        if (filter.Length < prefix.Length)
        {
            return false;
        }

        for (var i = 0; i < prefix.Length; i++)
        {
            if (filter[i] != T.CreateTruncating(prefix[i]))
            {
                return false;
            }
        }

        return true;
    }

    private static bool TrySplitShared<T>(ReadOnlySpan<T> filter, out ReadOnlySpan<T> group, out ReadOnlySpan<T> inner)
        where T : unmanaged, IBinaryInteger<T>
    {
        group = default;
        inner = default;
        if (!StartsWithShare(filter))
        {
            return false;
        }

        var rest = filter["$share/".Length..];
        var slash = rest.IndexOf(T.CreateTruncating('/'));
        if (slash <= 0 || slash == rest.Length - 1)
        {
            return false;
        }

        var name = rest[..slash];
        if (name.IndexOfAny(T.CreateTruncating('+'), T.CreateTruncating('#')) >= 0)
        {
            return false;
        }

        group = name;
        inner = rest[(slash + 1)..];
        return true;
    }

    private static bool Match<T>(ReadOnlySpan<T> filter, ReadOnlySpan<T> topic)
        where T : unmanaged, IBinaryInteger<T>
    {
        var slash = T.CreateTruncating('/');
        var plus = T.CreateTruncating('+');
        var hash = T.CreateTruncating('#');
        if (filter.IsEmpty || topic.IsEmpty)
        {
            return false;
        }

        // [MQTT-4.7.2-1]: "$SYS/..." and the like are not matched by "#" or "+/...".
        if (topic[0] == T.CreateTruncating('$') && (filter[0] == plus || filter[0] == hash))
        {
            return false;
        }

        while (true)
        {
            var fEnd = filter.IndexOf(slash);
            var fLevel = fEnd < 0 ? filter : filter[..fEnd];
            if (fLevel.Length == 1 && fLevel[0] == hash)
            {
                return true;
            }

            var tEnd = topic.IndexOf(slash);
            var tLevel = tEnd < 0 ? topic : topic[..tEnd];
            if (!(fLevel.Length == 1 && fLevel[0] == plus) && !fLevel.SequenceEqual(tLevel))
            {
                return false;
            }

            if (fEnd < 0)
            {
                return tEnd < 0;
            }

            if (tEnd < 0)
            {
                // "sport/#" also matches "sport" (§4.7.1.2): the parent level.
                var restOfFilter = filter[(fEnd + 1)..];
                return restOfFilter.Length == 1 && restOfFilter[0] == hash;
            }

            filter = filter[(fEnd + 1)..];
            topic = topic[(tEnd + 1)..];
        }
    }
}
