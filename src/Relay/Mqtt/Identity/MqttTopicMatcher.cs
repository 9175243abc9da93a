using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Values that a grant's <c>%u</c> and <c>%c</c> stand for. A value that is empty or holds a topic
/// separator or wildcard (<c>/ + #</c>) substitutes nothing: a level containing it never matches,
/// so a crafted username cannot widen a rule.
/// </summary>
internal readonly ref struct MqttSubstitution
{
    public MqttSubstitution(ReadOnlySpan<char> username, ReadOnlySpan<char> clientId)
    {
        Username = username;
        ClientId = clientId;
        Enabled = true;
    }

    public ReadOnlySpan<char> Username { get; }

    public ReadOnlySpan<char> ClientId { get; }

    public bool Enabled { get; }
}

/// <summary>
/// Topic name and topic filter matching (MQTT 5.0 §4.7, MQTT 3.1.1 §4.7), allocation-free over spans.
/// Levels are split on <c>/</c>; empty levels are levels [MQTT-4.7.3-1 allows zero-length levels].
/// <list type="bullet">
/// <item><c>#</c> matches the parent level and any number of child levels [MQTT-4.7.1-2] and must be
/// last and alone in its level.</item>
/// <item><c>+</c> matches exactly one level and must be alone in its level [MQTT-4.7.1-3].</item>
/// <item>A filter starting with a wildcard does not match a topic starting with <c>$</c> [MQTT-4.7.2-1].</item>
/// </list>
/// Grant filters (the first argument of <see cref="Matches"/>, <see cref="Covers"/> and
/// <see cref="Overlaps"/>) may contain <c>%u</c> / <c>%c</c>, compared level by level against the
/// substitution values without building a string.
/// </summary>
internal static class MqttTopicMatcher
{
    /// <summary>A well-formed filter: non-empty, wildcards alone in their level, <c>#</c> last (MQTT 5.0 §4.7.1).</summary>
    public static bool IsValidFilter(ReadOnlySpan<char> filter) => MqttTopic.IsValidTopicFilter(filter);

    /// <summary>A topic name: non-empty, no wildcards [MQTT-4.7.3-1] [MQTT-4.7.0-1 via 3.3.2-2]; the codec's rule.</summary>
    public static bool IsValidTopic(ReadOnlySpan<char> topic) => MqttTopic.IsValidTopicName(topic);

    /// <summary>Does <paramref name="filter"/> match the topic name <paramref name="topic"/>?</summary>
    public static bool Matches(ReadOnlySpan<char> filter, ReadOnlySpan<char> topic) => Matches(filter, topic, default);

    /// <inheritdoc cref="Matches(ReadOnlySpan{char}, ReadOnlySpan{char})"/>
    public static bool Matches(ReadOnlySpan<char> filter, ReadOnlySpan<char> topic, scoped in MqttSubstitution substitution)
    {
        var f = new Levels(filter);
        var t = new Levels(topic);
        var dollar = topic.Length > 0 && topic[0] == '$';
        var first = true;
        while (f.TryNext(out var fl))
        {
            if (fl is "#")
            {
                // [MQTT-4.7.2-1]: a leading wildcard never matches a $ topic.
                return !(first && dollar);
            }

            if (!t.TryNext(out var tl))
            {
                return false;
            }

            if (fl is "+")
            {
                if (first && dollar)
                {
                    return false;
                }
            }
            else if (!LevelEquals(fl, tl, substitution))
            {
                return false;
            }

            first = false;
        }

        return t.AtEnd;
    }

    /// <summary>
    /// Is every topic that <paramref name="requested"/> can match also matched by <paramref name="grant"/>?
    /// The question an ACL asks of a SUBSCRIBE: <c>devices/d1/+/x</c> is covered by <c>devices/d1/#</c>,
    /// <c>devices/+/x</c> is not, and <c>#</c> only by <c>#</c>.
    /// </summary>
    public static bool Covers(ReadOnlySpan<char> grant, ReadOnlySpan<char> requested) => Covers(grant, requested, default);

    /// <inheritdoc cref="Covers(ReadOnlySpan{char}, ReadOnlySpan{char})"/>
    public static bool Covers(ReadOnlySpan<char> grant, ReadOnlySpan<char> requested, scoped in MqttSubstitution substitution)
    {
        var g = new Levels(grant);
        var r = new Levels(requested);
        var first = true;
        while (g.TryNext(out var gl))
        {
            var hasRequested = r.TryNext(out var rl);
            if (gl is "#")
            {
                // '#' covers the rest, and also the parent level [MQTT-4.7.1-2]; but a leading '#'
                // matches no $ topic, so it cannot cover a request that names a $ first level.
                return !(first && hasRequested && IsDollarLiteral(rl));
            }

            if (!hasRequested)
            {
                return false;
            }

            if (gl is "+")
            {
                // '+' covers one level of anything but a multi-level wildcard, and at the start not a $ level.
                if (rl is "#" || (first && IsDollarLiteral(rl)))
                {
                    return false;
                }
            }
            else if (rl is "+" or "#" || !LevelEquals(gl, rl, substitution))
            {
                return false;
            }

            first = false;
        }

        return r.AtEnd;
    }

    /// <summary>
    /// Is there a topic that both filters match? A deny rule applies to a SUBSCRIBE that could receive
    /// any topic it denies, so deny rules use this rather than <see cref="Covers"/>.
    /// </summary>
    public static bool Overlaps(ReadOnlySpan<char> grant, ReadOnlySpan<char> requested) => Overlaps(grant, requested, default);

    /// <inheritdoc cref="Overlaps(ReadOnlySpan{char}, ReadOnlySpan{char})"/>
    public static bool Overlaps(ReadOnlySpan<char> grant, ReadOnlySpan<char> requested, scoped in MqttSubstitution substitution)
    {
        var g = new Levels(grant);
        var r = new Levels(requested);
        var first = true;
        while (true)
        {
            var hasGrant = g.TryNext(out var gl);
            var hasRequested = r.TryNext(out var rl);
            if (!hasGrant && !hasRequested)
            {
                return true;
            }

            if (!hasGrant || !hasRequested)
            {
                // One is longer: only a final '#' in it, matching the parent level [MQTT-4.7.1-2], still meets the other.
                return hasGrant ? gl is "#" && g.AtEnd : rl is "#" && r.AtEnd;
            }

            var gWild = gl is "+" or "#";
            var rWild = rl is "+" or "#";
            if (first && ((gWild && IsDollarLiteral(rl)) || (rWild && IsDollarLiteral(gl))))
            {
                return false;
            }

            if (gl is "#" || rl is "#")
            {
                return true;
            }

            if (!gWild && !rWild && !LevelEquals(gl, rl, substitution))
            {
                return false;
            }

            first = false;
        }
    }

    private static bool IsDollarLiteral(ReadOnlySpan<char> level) => level.Length > 0 && level[0] == '$';

    /// <summary>Compares a grant level (which may hold <c>%u</c>/<c>%c</c>) with a literal level.</summary>
    private static bool LevelEquals(ReadOnlySpan<char> grantLevel, ReadOnlySpan<char> level, scoped in MqttSubstitution substitution)
    {
        if (!substitution.Enabled || grantLevel.IndexOf('%') < 0)
        {
            return grantLevel.SequenceEqual(level);
        }

        while (!grantLevel.IsEmpty)
        {
            if (grantLevel.Length >= 2 && grantLevel[0] == '%' && grantLevel[1] is 'u' or 'c')
            {
                var value = grantLevel[1] == 'u' ? substitution.Username : substitution.ClientId;
                if (value.IsEmpty || value.IndexOfAny('/', '+', '#') >= 0 || !level.StartsWith(value))
                {
                    return false;
                }

                level = level[value.Length..];
                grantLevel = grantLevel[2..];
                continue;
            }

            if (level.IsEmpty || level[0] != grantLevel[0])
            {
                return false;
            }

            level = level[1..];
            grantLevel = grantLevel[1..];
        }

        return level.IsEmpty;
    }

    /// <summary>Topic levels of a name or filter, without allocating. An empty string is one empty level.</summary>
    private ref struct Levels(ReadOnlySpan<char> text)
    {
        private ReadOnlySpan<char> _rest = text;
        private bool _done;

        /// <summary>True when every level has been returned.</summary>
        public readonly bool AtEnd => _done;

        public bool TryNext(out ReadOnlySpan<char> level)
        {
            if (_done)
            {
                level = default;
                return false;
            }

            var slash = _rest.IndexOf('/');
            if (slash < 0)
            {
                level = _rest;
                _done = true;
            }
            else
            {
                level = _rest[..slash];
                _rest = _rest[(slash + 1)..];
            }

            return true;
        }
    }
}
