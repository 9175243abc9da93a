using Relay.Server.Schedules;

namespace Relay.Server.Tests.Schedules;

/// <summary>When schedules fire: "every" intervals, cron in a time zone across DST, and the catch-up policy. Pure, no clock.</summary>
public sealed class ScheduleTimingTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    [Theory]
    [InlineData("1s", 1)]
    [InlineData("30s", 30)]
    [InlineData("5m", 300)]
    [InlineData("2h", 7200)]
    [InlineData("8784h", 366 * 86400)]
    public void Every_parses_a_count_and_a_unit(string text, long seconds)
    {
        Assert.True(ScheduleTiming.TryParseEvery(text, out var interval));
        Assert.Equal(TimeSpan.FromSeconds(seconds), interval);
        Assert.True(ScheduleTiming.TryParseEvery(ScheduleTiming.FormatEvery(interval), out var again));
        Assert.Equal(interval, again);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("s")]
    [InlineData("0s")]
    [InlineData("05m")]
    [InlineData("-5m")]
    [InlineData("+5m")]
    [InlineData("5")]
    [InlineData("5d")]
    [InlineData("5M")]
    [InlineData(" 5m")]
    [InlineData("5 m")]
    [InlineData("1.5h")]
    [InlineData("8785h")]
    [InlineData("99999999s")]
    [InlineData("５m")]
    public void Every_refuses_anything_else(string? text) => Assert.False(ScheduleTiming.TryParseEvery(text, out _));

    [Fact]
    public void Every_refuses_random_and_mutated_text_without_throwing()
    {
        var random = new Random(15);
        var alphabet = "0123456789smhd -+.xٳ".ToCharArray();
        for (var i = 0; i < 20_000; i++)
        {
            var text = new string([.. Enumerable.Range(0, random.Next(0, 10)).Select(_ => alphabet[random.Next(alphabet.Length)])]);
            if (ScheduleTiming.TryParseEvery(text, out var interval))
            {
                Assert.InRange(interval, TimeSpan.FromSeconds(1), ScheduleTiming.MaxInterval);
                Assert.Equal(text[^1] switch { 's' => 1, 'm' => 60, _ => 3600 } * long.Parse(text[..^1], System.Globalization.CultureInfo.InvariantCulture), (long)interval.TotalSeconds);
            }
        }
    }

    [Fact]
    public void Every_counts_from_its_anchor()
    {
        var timing = ScheduleTiming.Every(TimeSpan.FromMinutes(1), T0);
        Assert.Equal(T0, timing.NextAfter(T0.AddSeconds(-5)));
        Assert.Equal(T0.AddMinutes(1), timing.NextAfter(T0));
        Assert.Equal(T0.AddMinutes(2), timing.NextAfter(T0.AddSeconds(61)));
        Assert.Equal(T0.AddMinutes(2), timing.LatestAtOrBefore(T0.AddSeconds(179)));
        Assert.Null(timing.LatestAtOrBefore(T0.AddTicks(-1)));
        Assert.Equal(3, timing.CountBetween(T0.AddMinutes(1), T0.AddMinutes(3), 100));
        Assert.Equal(2, timing.CountBetween(T0.AddSeconds(30), T0.AddSeconds(179), 100));
        Assert.Equal(2, timing.CountBetween(T0.AddMinutes(1), T0.AddMinutes(30), 2));
        Assert.Equal(TimeSpan.FromMinutes(1), timing.ShortestGap(T0, 10));
    }

    [Fact]
    public void Cron_in_a_time_zone_fires_at_local_time()
    {
        Assert.True(ScheduleTiming.TryCron("30 14 * * *", "Europe/Berlin", out var timing, out var error), error);

        // 14:30 in Berlin is 13:30 UTC in winter (CET) and 12:30 UTC in summer (CEST).
        Assert.Equal(new DateTimeOffset(2026, 1, 1, 13, 30, 0, TimeSpan.Zero), timing.NextAfter(T0));
        Assert.Equal(new DateTimeOffset(2026, 7, 1, 12, 30, 0, TimeSpan.Zero), timing.NextAfter(new DateTimeOffset(2026, 7, 1, 0, 0, 0, TimeSpan.Zero)));
    }

    [Fact]
    public void Cron_on_the_spring_forward_day_fires_once_at_the_end_of_the_skipped_hour()
    {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist that day.
        Assert.True(ScheduleTiming.TryCron("30 2 * * *", "Europe/Berlin", out var timing, out var error), error);
        var occurrences = Occurrences(timing, new DateTimeOffset(2026, 3, 27, 12, 0, 0, TimeSpan.Zero), 4);
        Assert.Equal(
            [
                new DateTimeOffset(2026, 3, 28, 1, 30, 0, TimeSpan.Zero), // 02:30 CET
                new DateTimeOffset(2026, 3, 29, 1, 0, 0, TimeSpan.Zero), // 03:00 CEST, the end of the gap: once
                new DateTimeOffset(2026, 3, 30, 0, 30, 0, TimeSpan.Zero), // 02:30 CEST
                new DateTimeOffset(2026, 3, 31, 0, 30, 0, TimeSpan.Zero),
            ],
            occurrences);
    }

    [Fact]
    public void Cron_on_the_fall_back_day_fires_once_though_the_hour_comes_twice()
    {
        // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens at 00:30 and 01:30 UTC.
        Assert.True(ScheduleTiming.TryCron("30 2 * * *", "Europe/Berlin", out var timing, out var error), error);
        var occurrences = Occurrences(timing, new DateTimeOffset(2026, 10, 24, 12, 0, 0, TimeSpan.Zero), 3);
        Assert.Equal(
            [
                new DateTimeOffset(2026, 10, 25, 0, 30, 0, TimeSpan.Zero), // the first 02:30 (CEST): once
                new DateTimeOffset(2026, 10, 26, 1, 30, 0, TimeSpan.Zero), // 02:30 CET
                new DateTimeOffset(2026, 10, 27, 1, 30, 0, TimeSpan.Zero),
            ],
            occurrences);

        // An interval expression fires in both instances of the repeated hour: every 30 minutes, 01:00..03:00 local.
        Assert.True(ScheduleTiming.TryCron("*/30 * * * *", "Europe/Berlin", out var every30, out _));
        var from = new DateTimeOffset(2026, 10, 24, 23, 59, 0, TimeSpan.Zero); // 01:59 CEST
        Assert.Equal(8, every30.CountBetween(from, from.AddHours(4).AddMinutes(-29), 100));
        Assert.Equal(TimeSpan.FromMinutes(30), every30.ShortestGap(from, 10));
    }

    [Theory]
    [InlineData("* * * * * *")]
    [InlineData("61 * * * *")]
    [InlineData("* * *")]
    [InlineData("")]
    [InlineData("@sometimes")]
    public void Cron_refuses_what_is_not_a_five_field_expression(string expression) =>
        Assert.False(ScheduleTiming.TryCron(expression, null, out _, out _));

    [Theory]
    [InlineData("../../etc/passwd")]
    [InlineData("/etc/localtime")]
    [InlineData("Europe/../../../etc/passwd")]
    [InlineData("Europe/Nowhere")]
    [InlineData("Europe\\Berlin")]
    [InlineData("Europe/Berlin\n")]
    [InlineData("")]
    public void Time_zones_are_ids_and_never_paths(string zone) =>
        Assert.False(ScheduleTiming.TryCron("0 * * * *", zone, out _, out _));

    [Fact]
    public void Time_zone_ids_longer_than_the_limit_are_refused() =>
        Assert.False(ScheduleTiming.TryCron("0 * * * *", new string('A', ScheduleTiming.MaxTimeZoneLength + 1), out _, out _));

    [Fact]
    public void A_cron_expression_that_fires_every_minute_in_one_hour_has_a_one_minute_gap()
    {
        Assert.True(ScheduleTiming.TryCron("* 9 * * *", "UTC", out var timing, out _));
        Assert.Equal(TimeSpan.FromMinutes(1), timing.ShortestGap(T0, 2000));
        Assert.True(ScheduleTiming.TryCron("0 9 * * 1", "UTC", out var weekly, out _));
        Assert.Equal(TimeSpan.FromDays(7), weekly.ShortestGap(T0, 10));
    }

    [Fact]
    public void On_time_the_due_run_runs_and_nothing_is_skipped()
    {
        var timing = ScheduleTiming.Every(TimeSpan.FromMinutes(1), T0);
        var due = T0.AddMinutes(1);
        Assert.Equal(new CatchUpDecision(due, 0, due.AddMinutes(1)), ScheduleCatchUp.Decide(timing, due, due.AddMilliseconds(3), TimeSpan.FromHours(1)));
    }

    [Fact]
    public void After_downtime_within_the_grace_window_the_latest_missed_run_runs_once_and_the_others_are_skipped()
    {
        var timing = ScheduleTiming.Every(TimeSpan.FromMinutes(1), T0);

        // Due at +1 min; back at +5 min 30 s: +1..+5 were missed, +5 runs, four are skipped, +6 is next.
        var decision = ScheduleCatchUp.Decide(timing, T0.AddMinutes(1), T0.AddSeconds(330), TimeSpan.FromHours(1));
        Assert.Equal(new CatchUpDecision(T0.AddMinutes(5), 4, T0.AddMinutes(6)), decision);
    }

    [Fact]
    public void After_downtime_beyond_the_grace_window_every_missed_run_is_skipped()
    {
        Assert.True(ScheduleTiming.TryCron("30 14 * * *", "Europe/Berlin", out var daily, out _));
        var due = new DateTimeOffset(2026, 1, 1, 13, 30, 0, TimeSpan.Zero);

        // Down from before the 1st's run until 16:00 Berlin on the 4th: four runs missed, the latest 90 min ago.
        var decision = ScheduleCatchUp.Decide(daily, due, new DateTimeOffset(2026, 1, 4, 15, 0, 0, TimeSpan.Zero), TimeSpan.FromHours(1));
        Assert.Equal(new CatchUpDecision(null, 4, new DateTimeOffset(2026, 1, 5, 13, 30, 0, TimeSpan.Zero)), decision);

        // With a two-hour grace window the 4th's run still happens, once; three are skipped.
        decision = ScheduleCatchUp.Decide(daily, due, new DateTimeOffset(2026, 1, 4, 15, 0, 0, TimeSpan.Zero), TimeSpan.FromHours(2));
        Assert.Equal(new CatchUpDecision(new DateTimeOffset(2026, 1, 4, 13, 30, 0, TimeSpan.Zero), 3, new DateTimeOffset(2026, 1, 5, 13, 30, 0, TimeSpan.Zero)), decision);
    }

    [Fact]
    public void Skipped_runs_are_counted_up_to_a_bound()
    {
        var timing = ScheduleTiming.Every(TimeSpan.FromSeconds(1), T0);
        var decision = ScheduleCatchUp.Decide(timing, T0, T0.AddYears(1), TimeSpan.FromHours(1));
        Assert.Equal(ScheduleCatchUp.MaxCounted - 1, decision.Skipped);
    }

    private static List<DateTimeOffset> Occurrences(ScheduleTiming timing, DateTimeOffset from, int count)
    {
        var list = new List<DateTimeOffset>();
        var at = from;
        while (list.Count < count && timing.NextAfter(at) is { } next)
        {
            list.Add(next);
            at = next;
        }

        return list;
    }
}
