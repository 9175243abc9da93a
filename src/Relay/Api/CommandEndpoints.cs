using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Features;
using Relay.Server.Mqtt;
using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Api;

/// <summary>202 answer to a command request; <c>notBefore</c> when the command is held until then.</summary>
internal sealed record CommandAccepted(
    string Id,
    string State,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] DateTimeOffset? NotBefore = null);

/// <summary>One stored transition.</summary>
internal sealed record CommandTransitionResponse(
    string State,
    DateTimeOffset At,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] JsonElement? Result);

/// <summary>A command as GET and history return it.</summary>
internal sealed record CommandResponse(
    string Id,
    string Device,
    string Name,
    string State,
    [property: JsonPropertyName("qos")] int QoS,
    DateTimeOffset CreatedAt,
    DateTimeOffset ExpiresAt,
    DateTimeOffset UpdatedAt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] DateTimeOffset? NotBefore,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] JsonElement? Payload,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? PayloadBase64,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] JsonElement? Result,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<CommandTransitionResponse>? Transitions);

/// <summary>A page of a device's history, newest first; <c>next</c> is the <c>after</c> of the next page.</summary>
internal sealed record CommandHistoryResponse(IReadOnlyList<CommandResponse> Commands, string? Next);

internal sealed record BroadcastItem(string Device, string Id);

internal sealed record BroadcastResponse(IReadOnlyList<BroadcastItem> Commands, IReadOnlyList<string> Skipped);

/// <summary>
/// The command endpoints of the push API (issue 5 §1): enqueue, status with long-poll, history, cancel,
/// broadcast by tag. Request bodies are read with a bound (payload limit plus room for the envelope) and
/// parsed with JsonDocument, because a payload is any JSON value; responses use source-generated JSON.
/// </summary>
internal static class CommandEndpoints
{
    public const int MaxWaitSeconds = 60;
    public const int MaxHistoryLimit = 500;
    public const int MaxNameLength = 128;

    public const string ReadScope = "read";
    public const string PushScope = "push";

    public static void Map(WebApplication app)
    {
        app.MapPost("/v1/devices/{id}/commands", static (HttpContext http, string id, CommandService commands) => EnqueueAsync(http, id, commands));
        app.MapGet("/v1/commands/{id}", static (HttpContext http, string id, CommandService commands) => GetAsync(http, id, commands));
        app.MapGet("/v1/devices/{id}/commands", static (HttpContext http, string id, CommandService commands, IDeviceRegistry registry) => HistoryAsync(http, id, commands, registry));
        app.MapPost("/v1/commands/{id}/cancel", static (HttpContext http, string id, CommandService commands) => CancelAsync(http, id, commands));
        app.MapPost("/v1/commands/broadcast", static (HttpContext http, CommandService commands) => BroadcastAsync(http, commands));
    }

    /// <summary>
    /// The one authorization check of these endpoints: null when the caller may act with
    /// <paramref name="scope"/> (<see cref="ReadScope"/> or <see cref="PushScope"/>), else the answer to send.
    /// Admin tokens have every scope; API tokens have the scopes they were created with (Api/ApiAuth.cs).
    /// </summary>
    public static IResult? Authorize(HttpContext http, string scope) => ApiAuth.Authorize(http, scope);

    private static async Task<IResult> EnqueueAsync(HttpContext http, string device, CommandService commands)
    {
        if (Authorize(http, PushScope) is { } denied)
        {
            return denied;
        }

        var (request, _, error) = await ReadRequestAsync(http, commands.Options, needTag: false).ConfigureAwait(false);
        if (error is not null)
        {
            return error;
        }

        var (entry, failure) = await commands.EnqueueAsync(device, request! with { Token = ApiAuth.TokenId(http) }, http.RequestAborted).ConfigureAwait(false);
        return failure switch
        {
            CommandError.UnknownDevice => Problem(404, "Unknown device", $"No device '{device}' is registered; create it with POST /v1/devices first."),
            CommandError.TooManyQueued => Problem(429, "Too many queued commands", $"Device '{device}' already has {commands.Options.MaxQueuedCommandsPerDevice} commands waiting (Relay:Push:MaxQueuedCommandsPerDevice); wait until it takes them or cancel some."),
            CommandError.QuotaExceeded => OverQuota(commands.Options),
            _ => Accepted(http, entry!),
        };
    }

    private static async Task<IResult> BroadcastAsync(HttpContext http, CommandService commands)
    {
        if (Authorize(http, PushScope) is { } denied)
        {
            return denied;
        }

        var (request, tag, error) = await ReadRequestAsync(http, commands.Options, needTag: true).ConfigureAwait(false);
        if (error is not null)
        {
            return error;
        }

        var (entries, skipped, failure) = await commands.BroadcastAsync(tag!, request! with { Token = ApiAuth.TokenId(http) }, http.RequestAborted).ConfigureAwait(false);
        switch (failure)
        {
            case CommandError.TooManyDevices:
                return Problem(409, "Too many devices", $"More than {commands.Options.MaxBroadcastDevices} devices carry tag '{tag}' (Relay:Push:MaxBroadcastDevices); use a narrower tag.");
            case CommandError.QuotaExceeded:
                return OverQuota(commands.Options);
        }

        return Results.Json(new BroadcastResponse([.. entries.Select(static e => new BroadcastItem(e.Device, e.Id))], skipped), ApiJsonContext.Relaxed.BroadcastResponse, statusCode: 202);
    }

    private static async Task<IResult> GetAsync(HttpContext http, string id, CommandService commands)
    {
        if (Authorize(http, ReadScope) is { } denied)
        {
            return denied;
        }

        var waitText = http.Request.Query["wait"].ToString();
        var wait = 0;
        if (waitText.Length > 0 && (!int.TryParse(waitText, NumberStyles.None, CultureInfo.InvariantCulture, out wait) || wait > MaxWaitSeconds))
        {
            return Problem(400, "Bad wait", $"'wait' must be whole seconds from 0 to {MaxWaitSeconds}.");
        }

        if (commands.Get(id) is not { } found)
        {
            return UnknownCommand(id);
        }

        if (wait > 0 && !CommandLifecycle.IsFinal(found.Entry.State))
        {
            if (await commands.WaitForFinalAsync(id, TimeSpan.FromSeconds(wait), http.RequestAborted).ConfigureAwait(false) == CommandError.TooManyWaiters)
            {
                return Problem(429, "Too many waiting requests", $"{commands.Options.MaxWaiters} requests are waiting already (Relay:Push:MaxWaiters); retry without ?wait or later.");
            }

            found = commands.Get(id) ?? found;
        }

        return Results.Json(ToResponse(found.Entry, found.Transitions), ApiJsonContext.Relaxed.CommandResponse);
    }

    private static async Task<IResult> HistoryAsync(HttpContext http, string device, CommandService commands, IDeviceRegistry registry)
    {
        if (Authorize(http, ReadScope) is { } denied)
        {
            return denied;
        }

        var limit = 50;
        var limitText = http.Request.Query["limit"].ToString();
        if (limitText.Length > 0 && (!int.TryParse(limitText, NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxHistoryLimit))
        {
            return Problem(400, "Bad limit", $"'limit' must be 1..{MaxHistoryLimit}.");
        }

        if (await registry.FindAsync(device, http.RequestAborted).ConfigureAwait(false) is null)
        {
            return Problem(404, "Unknown device", $"No device '{device}' is registered.");
        }

        var after = http.Request.Query["after"].ToString();
        var page = commands.History(device, after.Length == 0 ? null : after, limit);
        return Results.Json(new CommandHistoryResponse([.. page.Select(e => ToResponse(e, null))], page.Count == limit ? page[^1].Id : null), ApiJsonContext.Relaxed.CommandHistoryResponse);
    }

    private static async Task<IResult> CancelAsync(HttpContext http, string id, CommandService commands)
    {
        if (Authorize(http, PushScope) is { } denied)
        {
            return denied;
        }

        var outcome = await commands.CancelAsync(id, http.RequestAborted).ConfigureAwait(false);
        switch (outcome)
        {
            case CommandError.None:
                return Results.Json(new CommandAccepted(id, StateName(CommandState.Canceled)), ApiJsonContext.Relaxed.CommandAccepted);
            case CommandError.UnknownCommand:
                return UnknownCommand(id);
            case CommandError.Busy:
                return Problem(429, "Busy", "The command loop is overloaded; retry shortly.");
            default:
                var state = commands.Get(id)?.Entry.State;
                return Problem(409, "Not cancelable", $"Command '{id}' is {(state is { } s ? StateName(s) : "gone")}{(state == CommandState.Queued ? " and being sent to the device right now" : string.Empty)}; only a command not yet sent to the device can be canceled.");
        }
    }

    private static IResult Accepted(HttpContext http, CommandEntry entry)
    {
        http.Response.Headers.Location = "/v1/commands/" + entry.Id;

        // The state it was accepted in: a device online and quick may have acknowledged, even answered, the
        // command before this response is written, and a 202 that sometimes says "succeeded" would surprise.
        var accepted = new CommandAccepted(entry.Id, StateName(CommandState.Queued), entry.NotBefore);
        return Results.Json(accepted, ApiJsonContext.Relaxed.CommandAccepted, statusCode: 202);
    }

    /// <summary>Reads {name, payload, ttlSeconds, qos, notBefore[, tag]} with a bound on the body; the error is the answer to send.</summary>
    private static async Task<(CommandRequest? Request, string? Tag, IResult? Error)> ReadRequestAsync(HttpContext http, PushOptions options, bool needTag)
    {
        var (document, error) = await ReadBodyAsync(http, options).ConfigureAwait(false);
        if (document is null)
        {
            return (null, null, error);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return (null, null, Problem(400, "Bad body", "The body must be a JSON object: {\"name\": \"...\", \"payload\": <any JSON>, \"ttlSeconds\": 3600, \"qos\": 1}."));
            }

            string? tag = null;
            if (needTag && (!root.TryGetProperty("tag", out var tagElement) || tagElement.ValueKind != JsonValueKind.String || (tag = tagElement.GetString()) is not { Length: > 0 }))
            {
                return (null, null, Problem(400, "Bad tag", "'tag' is required: the tag of the devices to send the command to."));
            }

            var now = http.RequestServices.GetRequiredService<TimeProvider>().GetUtcNow();
            var (request, bad) = ParseCommand(http, root, options, now, allowNotBefore: true);
            return (request, tag, bad);
        }
    }

    /// <summary>
    /// Reads a JSON body bounded by what a command may carry (its payload may be base64, 4/3 larger, inside
    /// the envelope): the parsed document (the caller disposes it), or the answer to send.
    /// </summary>
    internal static async Task<(JsonDocument? Document, IResult? Error)> ReadBodyAsync(HttpContext http, PushOptions options)
    {
        var maxBody = (options.MaxPayloadBytes * 4L / 3) + 8192;
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodyLimit && bodyLimit.MaxRequestBodySize < maxBody)
        {
            // Relay:Http:MaxRequestBodyBytes is for every endpoint; a command may carry up to Relay:Push:MaxPayloadBytes.
            bodyLimit.MaxRequestBodySize = maxBody;
        }

        if (http.Request.ContentLength is { } length && length > maxBody)
        {
            return (null, TooLarge(http, options));
        }

        using var body = new MemoryStream();
        var buffer = new byte[16 * 1024];
        int read;
        while ((read = await http.Request.Body.ReadAsync(buffer, http.RequestAborted).ConfigureAwait(false)) > 0)
        {
            if (body.Length + read > maxBody)
            {
                return (null, TooLarge(http, options));
            }

            body.Write(buffer, 0, read);
        }

        try
        {
            return (JsonDocument.Parse(body.GetBuffer().AsMemory(0, (int)body.Length), new JsonDocumentOptions { MaxDepth = 64 }), null);
        }
        catch (JsonException e)
        {
            return (null, Problem(400, "Bad JSON", $"The body is not valid JSON: {e.Message}"));
        }
    }

    /// <summary>
    /// A command's fields in <paramref name="root"/> (an object): name, payload, ttlSeconds, qos and, when
    /// <paramref name="allowNotBefore"/>, notBefore. The error is the answer to send.
    /// </summary>
    internal static (CommandRequest? Request, IResult? Error) ParseCommand(
        HttpContext http, JsonElement root, PushOptions options, DateTimeOffset now, bool allowNotBefore)
    {
        if (!root.TryGetProperty("name", out var nameElement) || nameElement.ValueKind != JsonValueKind.String || nameElement.GetString() is not { Length: > 0 and <= MaxNameLength } name || name.Any(char.IsControl))
        {
            return (null, Problem(400, "Bad name", $"'name' is required: a string of 1..{MaxNameLength} characters without control characters."));
        }

        var ttl = options.DefaultTtlSeconds;
        if (root.TryGetProperty("ttlSeconds", out var ttlElement) && ttlElement.ValueKind != JsonValueKind.Null && (!ttlElement.TryGetInt32(out ttl) || ttl < 1 || ttl > options.MaxTtlSeconds))
        {
            return (null, Problem(400, "Bad ttlSeconds", $"'ttlSeconds' must be whole seconds from 1 to {options.MaxTtlSeconds} (Relay:Push:MaxTtlSeconds)."));
        }

        var qos = 1;
        if (root.TryGetProperty("qos", out var qosElement) && qosElement.ValueKind != JsonValueKind.Null && (!qosElement.TryGetInt32(out qos) || qos is < 1 or > 2))
        {
            return (null, Problem(400, "Bad qos", "'qos' must be 1 or 2: a command's delivery is confirmed by the device's acknowledgement, which QoS 0 has not."));
        }

        DateTimeOffset? notBefore = null;
        if (root.TryGetProperty("notBefore", out var notBeforeElement) && notBeforeElement.ValueKind != JsonValueKind.Null)
        {
            var latest = now.AddDays(options.MaxNotBeforeDays);
            if (!allowNotBefore)
            {
                return (null, Problem(400, "Bad notBefore", "'notBefore' is not allowed here: a schedule decides when its commands go."));
            }

            // RFC 3339 with an offset (or Z): a time without one would mean the server's local time, which the caller cannot know.
            if (notBeforeElement.ValueKind != JsonValueKind.String || !notBeforeElement.TryGetDateTime(out var local) || local.Kind == DateTimeKind.Unspecified
                || !notBeforeElement.TryGetDateTimeOffset(out var at) || at > latest)
            {
                var detail = "'notBefore' must be an RFC 3339 time with an offset (e.g. \"2026-05-01T14:30:00Z\"), "
                    + $"at most {options.MaxNotBeforeDays} days ahead (Relay:Push:MaxNotBeforeDays).";
                return (null, Problem(400, "Bad notBefore", detail));
            }

            // A time already past sends at once.
            notBefore = at > now ? at : null;
        }

        byte[] payload;
        var binary = false;
        if (!root.TryGetProperty("payload", out var payloadElement))
        {
            payload = "null"u8.ToArray();
        }
        else if (payloadElement.ValueKind == JsonValueKind.Object && payloadElement.TryGetProperty("base64", out var b64) && CountProperties(payloadElement) == 1)
        {
            if (b64.ValueKind != JsonValueKind.String || !b64.TryGetBytesFromBase64(out var bytes))
            {
                return (null, Problem(400, "Bad payload", "'payload.base64' must be a base64 string (standard alphabet, padded)."));
            }

            payload = bytes;
            binary = true;
        }
        else
        {
            payload = System.Text.Encoding.UTF8.GetBytes(payloadElement.GetRawText());
        }

        if (payload.Length > options.MaxPayloadBytes)
        {
            return (null, TooLarge(http, options));
        }

        return (new CommandRequest(name, payload, binary, ttl, (byte)qos) { NotBefore = notBefore }, null);
    }

    private static int CountProperties(JsonElement element)
    {
        var count = 0;
        foreach (var _ in element.EnumerateObject())
        {
            count++;
        }

        return count;
    }

    private static CommandResponse ToResponse(CommandEntry entry, List<StoredTransition>? transitions) => new(
        entry.Id,
        entry.Device,
        entry.Name,
        StateName(entry.State),
        entry.QoS,
        entry.CreatedAt,
        entry.ExpiresAt,
        entry.UpdatedAt,
        entry.NotBefore,
        entry.Binary ? null : Json(entry.Payload ?? "null"u8.ToArray()),
        entry.Binary ? Convert.ToBase64String(entry.Payload ?? []) : null,
        entry.ResultJson is { } result ? Json(System.Text.Encoding.UTF8.GetBytes(result)) : null,
        transitions?.Select(static t => new CommandTransitionResponse(StateName(t.State), t.At, t.ResultJson is { } r ? Json(System.Text.Encoding.UTF8.GetBytes(r)) : null)).ToList());

    private static JsonElement Json(byte[] utf8)
    {
        using var document = JsonDocument.Parse(utf8);
        return document.RootElement.Clone();
    }

    /// <summary>The wire name of a state: lower case (queued, delivered, succeeded, failed, expired, canceled).</summary>
    public static string StateName(CommandState state) => state switch
    {
        CommandState.Queued => "queued",
        CommandState.Delivered => "delivered",
        CommandState.Succeeded => "succeeded",
        CommandState.Failed => "failed",
        CommandState.Expired => "expired",
        _ => "canceled",
    };

    private static IResult OverQuota(PushOptions options) =>
        Problem(429, "Too many queued bytes", $"This token's commands that are not final yet would hold more than {options.MaxQueuedBytesPerToken} bytes (Relay:Push:MaxQueuedBytesPerToken; each command counts its payload plus {CommandCost.PerCommandBytes} bytes). Wait until devices take them, cancel some, or use shorter TTLs. A broadcast is refused whole.");

    internal static IResult UnknownCommand(string id) => Problem(404, "Unknown command", $"No command '{id}'; command ids are returned by POST /v1/devices/{{id}}/commands.");

    private static IResult TooLarge(HttpContext http, PushOptions options)
    {
        http.RequestServices.GetRequiredService<PushLimitHits>().Record(PushLimit.PayloadSize, http.Request.Path);
        return Problem(413, "Payload too large", $"The payload is larger than {options.MaxPayloadBytes} bytes (Relay:Push:MaxPayloadBytes); send less, or a reference the device can fetch.");
    }

    internal static IResult Problem(int status, string title, string detail) =>
        Results.Json(new ProblemResponse("about:blank", title, status, detail), ApiJsonContext.Relaxed.ProblemResponse, "application/problem+json", status);
}
