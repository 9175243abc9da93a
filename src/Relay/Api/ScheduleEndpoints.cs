using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Relay.Server.Push.Commands;
using Relay.Server.Schedules;

namespace Relay.Server.Api;

/// <summary>The command a schedule sends, as the API shows it.</summary>
internal sealed record ScheduleCommandResponse(
    string Name,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] JsonElement? Payload,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? PayloadBase64,
    int TtlSeconds,
    [property: JsonPropertyName("qos")] int QoS);

/// <summary>A schedule as the API returns it.</summary>
internal sealed record ScheduleResponse(
    string Id,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Name,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Device,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Tag,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Cron,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? TimeZone,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Every,
    ScheduleCommandResponse Command,
    bool Paused,
    DateTimeOffset CreatedAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] DateTimeOffset? NextRunAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] DateTimeOffset? LastRunAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? LastOutcome,
    long Runs,
    long Skipped,
    long Failed);

/// <summary>A page of schedules in creation order; <c>next</c> is the <c>after</c> of the next page.</summary>
internal sealed record ScheduleListResponse(IReadOnlyList<ScheduleResponse> Schedules, string? Next);

/// <summary>
/// <c>/v1/schedules</c>: recurring commands to a device or a tag (docs/data.md, Schedules). Creating,
/// pausing, resuming and deleting take the push scope (a schedule sends commands); reading takes read.
/// </summary>
internal static class ScheduleEndpoints
{
    public const int DefaultPageSize = 100;
    public const int MaxPageSize = 500;
    public const int MaxNameLength = 128;

    private const string Example = """{"device": "d1", "cron": "30 14 * * *", "timeZone": "Europe/Berlin", "command": {"name": "report"}}""";

    public static void Map(WebApplication app)
    {
        app.MapPost("/v1/schedules", static (HttpContext http, ScheduleService schedules, PushOptions push) => CreateAsync(http, schedules, push));
        app.MapGet("/v1/schedules", static (HttpContext http, ScheduleService schedules) => List(http, schedules));
        app.MapGet("/v1/schedules/{id}", static (HttpContext http, string id, ScheduleService schedules) => Get(http, id, schedules));
        app.MapPost("/v1/schedules/{id}/pause", static (HttpContext http, string id, ScheduleService schedules) => SetPaused(http, id, schedules, true));
        app.MapPost("/v1/schedules/{id}/resume", static (HttpContext http, string id, ScheduleService schedules) => SetPaused(http, id, schedules, false));
        app.MapDelete("/v1/schedules/{id}", static (HttpContext http, string id, ScheduleService schedules) => Delete(http, id, schedules));
    }

    private static async Task<IResult> CreateAsync(HttpContext http, ScheduleService schedules, PushOptions push)
    {
        if (ApiAuth.Authorize(http, CommandEndpoints.PushScope) is { } denied)
        {
            return denied;
        }

        var (document, error) = await CommandEndpoints.ReadBodyAsync(http, push).ConfigureAwait(false);
        if (document is null)
        {
            return error!;
        }

        ScheduleDraft draft;
        using (document)
        {
            var (parsed, bad) = Parse(http, document.RootElement, push);
            if (parsed is null)
            {
                return bad!;
            }

            draft = parsed;
        }

        var (schedule, failure, detail) = await schedules.CreateAsync(draft, http.RequestAborted).ConfigureAwait(false);
        var target = draft.Device ?? draft.Tag;
        switch (failure)
        {
            case ScheduleError.BadTiming:
                return Problem(400, "Bad timing", detail!);
            case ScheduleError.TooFrequent:
                return Problem(400, "Too frequent", detail!);
            case ScheduleError.UnknownDevice:
                return Problem(404, "Unknown device", $"No device '{draft.Device}' is registered; create it with POST /v1/devices first.");
            case ScheduleError.TooManySchedules:
                return Problem(409, "Too many schedules", $"{schedules.Options.MaxSchedules} schedules exist (Relay:Schedules:MaxSchedules); delete some.");
            case ScheduleError.TooManyForTarget:
                return Problem(
                    409,
                    "Too many schedules",
                    $"'{target}' has {schedules.Options.MaxSchedulesPerTarget} schedules already (Relay:Schedules:MaxSchedulesPerTarget); delete some first.");
        }

        http.Response.Headers.Location = "/v1/schedules/" + schedule!.Id;
        return Results.Json(ToResponse(schedule), ScheduleJsonContext.Relaxed.ScheduleResponse, statusCode: 201);
    }

    /// <summary>
    /// The body: <c>device</c> or <c>tag</c> (one of them); <c>cron</c> (with an optional <c>timeZone</c>) or
    /// <c>every</c> (one of them); <c>command</c>, as a command request without <c>notBefore</c>; an optional <c>name</c>.
    /// </summary>
    private static (ScheduleDraft? Draft, IResult? Error) Parse(HttpContext http, JsonElement root, PushOptions push)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            return (null, Problem(400, "Bad body", "The body must be a JSON object, e.g. " + Example));
        }

        if (!OptionalString(root, "name", MaxNameLength, out var name))
        {
            return (null, Problem(400, "Bad name", $"'name' must be a string of 1..{MaxNameLength} characters without control characters."));
        }

        if (!OptionalString(root, "device", MaxNameLength, out var device) || !OptionalString(root, "tag", MaxNameLength, out var tag)
            || (device is null) == (tag is null))
        {
            return (null, Problem(400, "Bad target", "Give exactly one of 'device' (a device id) and 'tag' (every device carrying it at each run)."));
        }

        if (!OptionalString(root, "cron", ScheduleTiming.MaxCronLength, out var cron)
            || !OptionalString(root, "timeZone", ScheduleTiming.MaxTimeZoneLength, out var zone)
            || !OptionalString(root, "every", 16, out var everyText) || (cron is null) == (everyText is null) || (zone is not null && cron is null))
        {
            const string Timing = "Give exactly one of 'cron' (five fields, with an optional IANA 'timeZone', default UTC) "
                + "and 'every' (\"30s\", \"5m\", \"2h\").";
            return (null, Problem(400, "Bad timing", Timing));
        }

        TimeSpan? every = null;
        if (everyText is not null)
        {
            if (!ScheduleTiming.TryParseEvery(everyText, out var interval))
            {
                return (null, Problem(400, "Bad every", "'every' must be a whole number and a unit: \"30s\", \"5m\" or \"2h\", at most 366 days."));
            }

            every = interval;
        }

        if (!root.TryGetProperty("command", out var commandElement) || commandElement.ValueKind != JsonValueKind.Object)
        {
            const string Command = "'command' is required: {\"name\": \"...\", \"payload\": <any JSON>, \"ttlSeconds\": 3600, \"qos\": 1}.";
            return (null, Problem(400, "Bad command", Command));
        }

        var (command, bad) = CommandEndpoints.ParseCommand(http, commandElement, push, DateTimeOffset.MinValue, allowNotBefore: false);
        if (command is null)
        {
            return (null, bad);
        }

        var (payload, token) = (command.Payload, ApiAuth.TokenId(http));
        var draft = new ScheduleDraft(name, device, tag, command.Name, payload, command.Binary, command.TtlSeconds, command.QoS, token, cron, zone, every);
        return (draft, null);
    }

    private static IResult List(HttpContext http, ScheduleService schedules)
    {
        if (ApiAuth.Authorize(http, CommandEndpoints.ReadScope) is { } denied)
        {
            return denied;
        }

        var limit = DefaultPageSize;
        var limitText = http.Request.Query["limit"].ToString();
        if (limitText.Length > 0 && (!int.TryParse(limitText, NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxPageSize))
        {
            return Problem(400, "Bad limit", $"'limit' must be 1..{MaxPageSize}.");
        }

        var device = http.Request.Query["device"].ToString();
        var tag = http.Request.Query["tag"].ToString();
        var after = http.Request.Query["after"].ToString();
        var page = schedules.List(device.Length == 0 ? null : device, tag.Length == 0 ? null : tag, after.Length == 0 ? null : after, limit);
        var body = new ScheduleListResponse([.. page.Select(ToResponse)], page.Count == limit ? page[^1].Id : null);
        return Results.Json(body, ScheduleJsonContext.Relaxed.ScheduleListResponse);
    }

    private static IResult Get(HttpContext http, string id, ScheduleService schedules)
    {
        if (ApiAuth.Authorize(http, CommandEndpoints.ReadScope) is { } denied)
        {
            return denied;
        }

        return schedules.Get(id) is { } schedule ? Results.Json(ToResponse(schedule), ScheduleJsonContext.Relaxed.ScheduleResponse) : UnknownSchedule(id);
    }

    private static IResult SetPaused(HttpContext http, string id, ScheduleService schedules, bool paused)
    {
        if (ApiAuth.Authorize(http, CommandEndpoints.PushScope) is { } denied)
        {
            return denied;
        }

        if ((paused ? schedules.Pause(id) : schedules.Resume(id)) != ScheduleError.None || schedules.Get(id) is not { } schedule)
        {
            return UnknownSchedule(id);
        }

        return Results.Json(ToResponse(schedule), ScheduleJsonContext.Relaxed.ScheduleResponse);
    }

    private static IResult Delete(HttpContext http, string id, ScheduleService schedules)
    {
        if (ApiAuth.Authorize(http, CommandEndpoints.PushScope) is { } denied)
        {
            return denied;
        }

        return schedules.Delete(id) == ScheduleError.None ? Results.NoContent() : UnknownSchedule(id);
    }

    /// <summary>False when the property is there but not a string of 1..<paramref name="max"/> characters without control characters.</summary>
    private static bool OptionalString(JsonElement root, string property, int max, out string? value)
    {
        value = null;
        if (!root.TryGetProperty(property, out var element) || element.ValueKind == JsonValueKind.Null)
        {
            return true;
        }

        if (element.ValueKind != JsonValueKind.String || element.GetString() is not { Length: > 0 } text || text.Length > max || text.Any(char.IsControl))
        {
            return false;
        }

        value = text;
        return true;
    }

    private static ScheduleResponse ToResponse(Schedule s) => new(
        s.Id,
        s.Name,
        s.Device,
        s.Tag,
        s.Cron,
        s.TimeZone,
        s.EverySeconds is { } every ? ScheduleTiming.FormatEvery(TimeSpan.FromSeconds(every)) : null,
        new ScheduleCommandResponse(s.CommandName, s.Binary ? null : Json(s.Payload), s.Binary ? Convert.ToBase64String(s.Payload) : null, s.TtlSeconds, s.QoS),
        s.Paused,
        s.CreatedAt,
        s.Paused ? null : s.NextDue,
        s.LastRun,
        s.LastOutcome,
        s.Runs,
        s.Skipped,
        s.Failed);

    private static JsonElement Json(byte[] utf8)
    {
        using var document = JsonDocument.Parse(utf8);
        return document.RootElement.Clone();
    }

    private static IResult UnknownSchedule(string id) =>
        Problem(404, "Unknown schedule", $"No schedule '{id}'; schedule ids are returned by POST /v1/schedules.");

    private static IResult Problem(int status, string title, string detail) => CommandEndpoints.Problem(status, title, detail);
}
