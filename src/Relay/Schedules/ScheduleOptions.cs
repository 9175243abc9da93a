using Microsoft.Extensions.Options;

namespace Relay.Server.Schedules;

/// <summary><c>Relay:Schedules</c>: recurring commands (docs/data.md, Schedules).</summary>
public sealed class ScheduleOptions
{
    /// <summary>Configuration section.</summary>
    public const string SectionName = "Relay:Schedules";

    /// <summary>Schedules stored at once; one more is refused with 409.</summary>
    public int MaxSchedules { get; set; } = 10_000;

    /// <summary>Schedules one device, or one tag, may have; one more is refused with 409.</summary>
    public int MaxSchedulesPerTarget { get; set; } = 100;

    /// <summary>
    /// Shortest time between two runs of a schedule: an "every" interval, or the shortest gap between the
    /// next occurrences of a cron expression. A schedule that would run more often is refused with 400.
    /// </summary>
    public int MinIntervalSeconds { get; set; } = 10;

    /// <summary>
    /// After downtime, the latest missed run still happens (once) when it is at most this old; older missed
    /// runs are skipped and counted. Should well exceed how late a run may be under load.
    /// </summary>
    public int CatchUpGraceSeconds { get; set; } = 3600;

    internal TimeSpan CatchUpGrace => TimeSpan.FromSeconds(CatchUpGraceSeconds);
}

/// <summary>Checks <c>Relay:Schedules</c>, naming each bad key.</summary>
internal sealed class ScheduleOptionsValidator : IValidateOptions<ScheduleOptions>
{
    public ValidateOptionsResult Validate(string? name, ScheduleOptions options)
    {
        var errors = new List<string>();
        void Check(bool ok, string key, string problem)
        {
            if (!ok)
            {
                errors.Add($"{ScheduleOptions.SectionName}:{key}: {problem}");
            }
        }

        Check(options.MaxSchedules is >= 1 and <= 1_000_000, nameof(ScheduleOptions.MaxSchedules), $"must be 1..1000000 (was {options.MaxSchedules})");
        var perTarget = options.MaxSchedulesPerTarget;
        Check(perTarget >= 1 && perTarget <= options.MaxSchedules, nameof(ScheduleOptions.MaxSchedulesPerTarget), $"must be 1..MaxSchedules (was {perTarget})");
        var interval = options.MinIntervalSeconds;
        Check(interval is >= 1 and <= 86_400, nameof(ScheduleOptions.MinIntervalSeconds), $"must be 1..86400 (was {interval})");
        var grace = options.CatchUpGraceSeconds;
        Check(grace is >= 1 and <= 30 * 86_400, nameof(ScheduleOptions.CatchUpGraceSeconds), $"must be 1..2592000 (was {grace})");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
