using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Cronos;

namespace Relay.Server.Schedules;

/// <summary>
/// When a recurring schedule fires: a cron expression in a time zone, or every N seconds from an anchor.
/// Pure (no clock, no I/O): every answer is a function of its arguments. Cron expressions are the standard
/// five fields (minute hour day-of-month month day-of-week) and the <c>@hourly</c>-style macros, parsed and
/// evaluated by Cronos, which also decides daylight-saving transitions: an occurrence inside the hour a
/// spring-forward skips fires once at the end of the gap; one inside the hour a fall-back repeats fires
/// once, at its first instance (an expression that fires every N minutes or hours fires in both instances).
/// </summary>
internal sealed class ScheduleTiming
{
    /// <summary>Longest time zone id accepted (IANA ids are at most about 32 characters).</summary>
    public const int MaxTimeZoneLength = 64;

    /// <summary>Longest cron expression accepted.</summary>
    public const int MaxCronLength = 128;

    /// <summary>Longest "every" interval: 366 days.</summary>
    public static readonly TimeSpan MaxInterval = TimeSpan.FromDays(366);

    private readonly CronExpression? _cron;
    private readonly TimeZoneInfo _zone = TimeZoneInfo.Utc;
    private readonly long _intervalTicks;
    private readonly DateTimeOffset _anchor;

    private ScheduleTiming(CronExpression cron, TimeZoneInfo zone)
    {
        _cron = cron;
        _zone = zone;
    }

    private ScheduleTiming(TimeSpan interval, DateTimeOffset anchor)
    {
        _intervalTicks = interval.Ticks;
        _anchor = anchor;
    }

    /// <summary>The interval of an "every" schedule; null for cron.</summary>
    public TimeSpan? Interval => _cron is null ? TimeSpan.FromTicks(_intervalTicks) : null;

    /// <summary>Every <paramref name="interval"/> (above zero) at <paramref name="anchor"/> + k × interval.</summary>
    public static ScheduleTiming Every(TimeSpan interval, DateTimeOffset anchor)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(interval, TimeSpan.Zero);
        return new ScheduleTiming(interval, anchor);
    }

    /// <summary>
    /// Parses an interval: a whole number 1..999999 and a unit, <c>s</c>, <c>m</c> or <c>h</c> (<c>"30s"</c>,
    /// <c>"5m"</c>, <c>"2h"</c>), at most <see cref="MaxInterval"/>.
    /// </summary>
    public static bool TryParseEvery(string? text, out TimeSpan interval)
    {
        interval = default;
        if (text is not { Length: >= 2 and <= 7 })
        {
            return false;
        }

        var seconds = text[^1] switch
        {
            's' => 1L,
            'm' => 60L,
            'h' => 3600L,
            _ => 0L,
        };
        var digits = text.AsSpan(0, text.Length - 1);
        if (seconds == 0 || digits[0] == '0' || !long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var count))
        {
            return false;
        }

        interval = TimeSpan.FromSeconds(count * seconds);
        return interval <= MaxInterval;
    }

    /// <summary>The text of an interval as <see cref="TryParseEvery"/> reads it: in hours, minutes or seconds, the largest unit that divides it.</summary>
    public static string FormatEvery(TimeSpan interval)
    {
        var seconds = (long)interval.TotalSeconds;
        return seconds % 3600 == 0 ? $"{seconds / 3600}h" : seconds % 60 == 0 ? $"{seconds / 60}m" : $"{seconds}s";
    }

    /// <summary>
    /// A cron schedule: <paramref name="expression"/> (five fields, or a macro) evaluated in the IANA time zone
    /// <paramref name="zoneId"/> (UTC when null). <paramref name="error"/> says what is wrong otherwise.
    /// </summary>
    public static bool TryCron(string? expression, string? zoneId, [NotNullWhen(true)] out ScheduleTiming? timing, [NotNullWhen(false)] out string? error)
    {
        timing = null;
        if (expression is not { Length: > 0 and <= MaxCronLength })
        {
            error = $"'cron' must be a cron expression of 1..{MaxCronLength} characters.";
            return false;
        }

        if (!TryFindZone(zoneId, out var zone))
        {
            error = $"'timeZone' must be an IANA time zone id such as \"Europe/Berlin\" or \"UTC\" (at most {MaxTimeZoneLength} characters).";
            return false;
        }

        CronExpression cron;
        try
        {
            cron = CronExpression.Parse(expression, CronFormat.Standard);
        }
        catch (CronFormatException e)
        {
            error = $"'cron' is not a valid five-field cron expression: {e.Message}";
            return false;
        }

        timing = new ScheduleTiming(cron, zone);
        error = null;
        return true;
    }

    /// <summary>The first occurrence strictly after <paramref name="after"/>; null when there is none (a cron date that never comes).</summary>
    public DateTimeOffset? NextAfter(DateTimeOffset after)
    {
        if (_cron is { } cron)
        {
            return cron.GetNextOccurrence(after, _zone, inclusive: false);
        }

        if (after < _anchor)
        {
            return _anchor;
        }

        var steps = ((after - _anchor).Ticks / _intervalTicks) + 1;
        return _anchor.AddTicks(steps * _intervalTicks);
    }

    /// <summary>The last occurrence at or before <paramref name="at"/>; null when there is none.</summary>
    public DateTimeOffset? LatestAtOrBefore(DateTimeOffset at)
    {
        if (_cron is { } cron)
        {
            return cron.GetPreviousOccurrence(at, _zone, inclusive: true);
        }

        if (at < _anchor)
        {
            return null;
        }

        return _anchor.AddTicks((at - _anchor).Ticks / _intervalTicks * _intervalTicks);
    }

    /// <summary>Occurrences in [<paramref name="from"/>, <paramref name="to"/>], counted up to <paramref name="cap"/>.</summary>
    public long CountBetween(DateTimeOffset from, DateTimeOffset to, long cap)
    {
        if (to < from)
        {
            return 0;
        }

        if (_cron is { } cron)
        {
            long count = 0;
            foreach (var _ in cron.GetOccurrences(from, to, _zone, fromInclusive: true, toInclusive: true))
            {
                if (++count >= cap)
                {
                    break;
                }
            }

            return count;
        }

        var first = from <= _anchor ? _anchor : NextAfter(from.AddTicks(-1))!.Value;
        return first > to ? 0 : Math.Min(cap, ((to - first).Ticks / _intervalTicks) + 1);
    }

    /// <summary>
    /// The shortest time between two consecutive occurrences among the first <paramref name="occurrences"/>
    /// after <paramref name="from"/> (null when fewer than two come): how often the schedule may fire.
    /// </summary>
    public TimeSpan? ShortestGap(DateTimeOffset from, int occurrences)
    {
        if (_cron is null)
        {
            return TimeSpan.FromTicks(_intervalTicks);
        }

        TimeSpan? shortest = null;
        var previous = NextAfter(from);
        for (var i = 1; i < occurrences && previous is { } p; i++)
        {
            var next = NextAfter(p);
            if (next is { } n && (shortest is null || n - p < shortest))
            {
                shortest = n - p;
            }

            previous = next;
        }

        return shortest;
    }

    /// <summary>
    /// The zone for an IANA id, checked first for what an id can contain: the lookup reads a file named by
    /// the id, and a client's text must not be able to name any other file.
    /// </summary>
    public static bool TryFindZone(string? id, [NotNullWhen(true)] out TimeZoneInfo? zone)
    {
        zone = null;
        if (id is null)
        {
            zone = TimeZoneInfo.Utc;
            return true;
        }

        if (id.Length is 0 or > MaxTimeZoneLength || id.Contains("..", StringComparison.Ordinal) || id[0] == '/'
            || !id.All(static c => char.IsAsciiLetterOrDigit(c) || c is '/' or '_' or '-' or '+'))
        {
            return false;
        }

        try
        {
            zone = TimeZoneInfo.FindSystemTimeZoneById(id);
            return true;
        }
        catch (Exception e) when (e is TimeZoneNotFoundException or InvalidTimeZoneException)
        {
            return false;
        }
    }
}

/// <summary>
/// What a schedule does about the occurrences from <paramref name="Run"/>'s due time up to now: run once
/// for <paramref name="Run"/> (null: none), skip <paramref name="Skipped"/> occurrences, and next be due at
/// <paramref name="Next"/> (null: never again).
/// </summary>
internal readonly record struct CatchUpDecision(DateTimeOffset? Run, long Skipped, DateTimeOffset? Next);

/// <summary>
/// The catch-up policy after the server was down (or the runner late): of the occurrences that came due
/// while nobody ran them, the latest runs once if it is at most the grace window old, and every other one
/// is skipped and counted; the schedule then goes on at its first occurrence after now. So a restart never
/// sends a burst of stale commands, and a run missed by a short outage (an upgrade) still happens, once.
/// </summary>
internal static class ScheduleCatchUp
{
    /// <summary>Occurrences counted as skipped at most (a minutely schedule down for years counts this many).</summary>
    public const long MaxCounted = 1_000_000;

    /// <summary>
    /// The decision for a schedule that was due at <paramref name="due"/> (an occurrence, at or before
    /// <paramref name="now"/>).
    /// </summary>
    public static CatchUpDecision Decide(ScheduleTiming timing, DateTimeOffset due, DateTimeOffset now, TimeSpan grace)
    {
        var next = timing.NextAfter(now);
        if (due > now)
        {
            return new CatchUpDecision(null, 0, due);
        }

        var missed = Math.Max(1, timing.CountBetween(due, now, MaxCounted));
        var latest = timing.LatestAtOrBefore(now) is { } l && l >= due ? l : due;
        return now - latest <= grace
            ? new CatchUpDecision(latest, missed - 1, next)
            : new CatchUpDecision(null, missed, next);
    }
}
