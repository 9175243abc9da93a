using Relay.Server.Mqtt;
using Relay.Server.Primitives;

namespace Relay.Server.Schedules;

/// <summary>A schedule as the API asks for it, its fields checked for form (the service checks the limits).</summary>
internal sealed record ScheduleDraft(
    string? Name,
    string? Device,
    string? Tag,
    string CommandName,
    byte[] Payload,
    bool Binary,
    int TtlSeconds,
    byte QoS,
    string? Token,
    string? Cron,
    string? TimeZone,
    TimeSpan? Every);

/// <summary>Why a schedule was not created, paused, resumed or deleted.</summary>
internal enum ScheduleError
{
    None,
    UnknownSchedule,
    UnknownDevice,

    /// <summary>The timing does not parse, or never fires.</summary>
    BadTiming,

    /// <summary>It would fire more often than Relay:Schedules:MinIntervalSeconds.</summary>
    TooFrequent,
    TooManySchedules,
    TooManyForTarget,
}

/// <summary>
/// The API's view of schedules: create (with the Relay:Schedules limits), read, list, pause, resume, delete.
/// Holds no state: the store has it, and the <see cref="ScheduleRunner"/> is woken when what is due changes.
/// </summary>
internal sealed partial class ScheduleService
{
    // Occurrences whose gaps are checked against Relay:Schedules:MinIntervalSeconds: more than a day of a
    // cron expression that fires every minute, so an hour-dependent burst ("* 9 * * *") is seen.
    private const int GapCheckOccurrences = 2000;

    private static readonly string[] LimitKeys =
        ["Relay:Schedules:MaxSchedules", "Relay:Schedules:MaxSchedulesPerTarget", "Relay:Schedules:MinIntervalSeconds"];

    private readonly ScheduleStore _store;
    private readonly ScheduleRunner _runner;
    private readonly IDeviceRegistry _registry;
    private readonly ScheduleOptions _options;
    private readonly ScheduleMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly LogThrottle _throttle;
    private readonly ILogger<ScheduleService> _logger;

    public ScheduleService(
        ScheduleStore store,
        ScheduleRunner runner,
        IDeviceRegistry registry,
        ScheduleOptions options,
        ScheduleMetrics metrics,
        TimeProvider time,
        ILogger<ScheduleService> logger)
    {
        _store = store;
        _runner = runner;
        _registry = registry;
        _options = options;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _throttle = new LogThrottle(LimitKeys.Length, TimeSpan.FromSeconds(10), time);
    }

    public ScheduleOptions Options => _options;

    /// <summary>Stores a new schedule (durable when this returns); its first run is its first occurrence after now.</summary>
    public async Task<(Schedule? Schedule, ScheduleError Error, string? Detail)> CreateAsync(ScheduleDraft draft, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        ScheduleTiming timing;
        if (draft.Every is { } every)
        {
            timing = ScheduleTiming.Every(every, now);
        }
        else if (!ScheduleTiming.TryCron(draft.Cron, draft.TimeZone, out var cron, out var error))
        {
            return (null, ScheduleError.BadTiming, error);
        }
        else
        {
            timing = cron;
        }

        if (timing.NextAfter(now) is not { } next)
        {
            return (null, ScheduleError.BadTiming, "The cron expression has no occurrence to come.");
        }

        var gap = timing.ShortestGap(now, GapCheckOccurrences);
        if (gap is { } g && g < TimeSpan.FromSeconds(_options.MinIntervalSeconds))
        {
            Refused(ScheduleLimit.MinInterval, draft.Device ?? draft.Tag);
            var detail = $"It would run every {g.TotalSeconds:0.###} s at times; the shortest interval allowed is {_options.MinIntervalSeconds} s "
                + "(Relay:Schedules:MinIntervalSeconds).";
            return (null, ScheduleError.TooFrequent, detail);
        }

        if (draft.Device is { } device && await _registry.FindAsync(device, cancellationToken).ConfigureAwait(false) is null)
        {
            return (null, ScheduleError.UnknownDevice, null);
        }

        var schedule = new Schedule
        {
            Id = Guid.CreateVersion7(now).ToString("N"),
            Name = draft.Name,
            Device = draft.Device,
            Tag = draft.Tag,
            CommandName = draft.CommandName,
            Payload = draft.Payload,
            Binary = draft.Binary,
            TtlSeconds = draft.TtlSeconds,
            QoS = draft.QoS,
            Token = draft.Token,
            Cron = draft.Every is null ? draft.Cron : null,
            TimeZone = draft.Every is null ? draft.TimeZone ?? "UTC" : null,
            EverySeconds = draft.Every is { } e ? (long)e.TotalSeconds : null,
            Anchor = now,
            CreatedAt = now,
            NextDue = next,
        };
        switch (_store.TryAdd(schedule, _options.MaxSchedules, _options.MaxSchedulesPerTarget))
        {
            case ScheduleLimit.Schedules:
                Refused(ScheduleLimit.Schedules, draft.Device ?? draft.Tag);
                return (null, ScheduleError.TooManySchedules, null);
            case ScheduleLimit.PerTarget:
                Refused(ScheduleLimit.PerTarget, draft.Device ?? draft.Tag);
                return (null, ScheduleError.TooManyForTarget, null);
        }

        _runner.Wake();
        return (schedule, ScheduleError.None, null);
    }

    public Schedule? Get(string id) => _store.Find(id);

    public List<Schedule> List(string? device, string? tag, string? after, int limit) => _store.List(device, tag, after, limit);

    /// <summary>Pauses: no run until resumed (and none caught up for the paused time).</summary>
    public ScheduleError Pause(string id) => _store.SetPaused(id, paused: true, null) ? ScheduleError.None : ScheduleError.UnknownSchedule;

    /// <summary>Resumes: the next run is the first occurrence after now.</summary>
    public ScheduleError Resume(string id)
    {
        if (_store.Find(id) is not { } schedule)
        {
            return ScheduleError.UnknownSchedule;
        }

        if (!_store.SetPaused(id, paused: false, schedule.Timing()?.NextAfter(_time.GetUtcNow())))
        {
            return ScheduleError.UnknownSchedule;
        }

        _runner.Wake();
        return ScheduleError.None;
    }

    /// <summary>Deletes the schedule; commands its runs stored stay (they are in each device's history).</summary>
    public ScheduleError Delete(string id) => _store.Delete(id) ? ScheduleError.None : ScheduleError.UnknownSchedule;

    private void Refused(ScheduleLimit limit, string? subject)
    {
        _metrics.CountLimitHit(limit);
        if (_throttle.TryEnter((int)limit, out _))
        {
            LogLimitHit(LimitKeys[(int)limit], LogText.Safe(subject));
        }
    }

    [LoggerMessage(
        EventId = 7510,
        Level = LogLevel.Warning,
        Message = "Schedules: refused by {Key} ({Subject}); further refusals are counted in relay_schedules_limit_hits_total and logged at most every 10 s")]
    private partial void LogLimitHit(string key, string subject);
}
