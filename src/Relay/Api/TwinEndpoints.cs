using System.Buffers;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Relay.Server.Mqtt;
using Relay.Server.Twins;

namespace Relay.Server.Api;

/// <summary>
/// <c>/v1/devices/{id}/twin</c>: read a device's state (read scope), and set its desired document (push scope:
/// it steers the device as a command does) by replacing it (PUT) or with a JSON Merge Patch (PATCH, RFC 7386).
/// Both writes take <c>If-Match</c> with the desired version (the ETag every answer carries) for optimistic
/// concurrency: another version gets 412 and changes nothing (RFC 9110 §13.1.1). Answers are written with
/// <see cref="Utf8JsonWriter"/> (the documents are <see cref="JsonObject"/>s already): a second partial declaration
/// of <see cref="ApiJsonContext"/> breaks its source generator (dotnet/runtime#99669).
/// </summary>
internal static class TwinEndpoints
{
    private const string Example = """{"interval": 5, "led": "on"}""";

    public static void Map(WebApplication app)
    {
        app.MapGet("/v1/devices/{id}/twin", GetAsync);
        app.MapPut("/v1/devices/{id}/twin/desired", static (HttpContext http, string id, TwinService twins, IDeviceRegistry registry) =>
            SetAsync(http, id, twins, registry, replace: true));
        app.MapPatch("/v1/devices/{id}/twin/desired", static (HttpContext http, string id, TwinService twins, IDeviceRegistry registry) =>
            SetAsync(http, id, twins, registry, replace: false));
    }

    private static async Task<IResult> GetAsync(HttpContext http, string id, TwinService twins, IDeviceRegistry registry)
    {
        if (ApiAuth.Authorize(http, ApiScope.Read) is { } refused)
        {
            return refused;
        }

        if (await registry.FindAsync(id, http.RequestAborted) is null)
        {
            return UnknownDevice(id);
        }

        return Answer(http, twins.Get(id));
    }

    private static async Task<IResult> SetAsync(HttpContext http, string id, TwinService twins, IDeviceRegistry registry, bool replace)
    {
        if (ApiAuth.Authorize(http, ApiScope.Push) is { } refused)
        {
            return refused;
        }

        if (!TryParseIfMatch(http, out var ifMatch))
        {
            return ApiProblems.BadRequest(
                $"If-Match must be the desired version as an entity tag, for example \"3\" (the ETag of GET /v1/devices/{id}/twin), or *.");
        }

        if (await registry.FindAsync(id, http.RequestAborted) is null)
        {
            return UnknownDevice(id);
        }

        var limit = twins.Options.MaxDocumentBytes;
        var (body, tooLarge) = await ReadBodyAsync(http, limit);
        if (tooLarge)
        {
            twins.CountBodyTooLarge();
            return ApiProblems.Problem(413, "Document too large", $"The body is over {limit} bytes (Relay:Twins:MaxDocumentBytes). Send a smaller patch.");
        }

        var update = await twins.SetDesiredAsync(id, body, replace, ifMatch, http.RequestAborted);
        switch (update.Status)
        {
            case TwinUpdateStatus.Applied:
                return Answer(http, update.Twin!);
            case TwinUpdateStatus.VersionMismatch:
                http.Response.Headers.ETag = ETag(update.Twin!.DesiredVersion);
                return ApiProblems.Problem(
                    412,
                    "Version mismatch",
                    $"If-Match names desired version {ifMatch}, but it is {update.Twin.DesiredVersion}; "
                    + $"read the twin again and retry with If-Match: {ETag(update.Twin.DesiredVersion)}.");
            case TwinUpdateStatus.Invalid:
                return ApiProblems.BadRequest($"The body must be a JSON object, for example {Example}: {update.Problem}.");
            case TwinUpdateStatus.LimitHit when update.Limit == TwinLimit.DocumentBytes:
                return ApiProblems.Problem(413, "Document too large", $"{Capitalized(update.Problem!)} (Relay:Twins:MaxDocumentBytes).");
            case TwinUpdateStatus.LimitHit:
                var key = update.Limit == TwinLimit.Depth ? "MaxDepth" : "MaxKeys";
                return ApiProblems.Problem(422, "Document over a limit", $"{Capitalized(update.Problem!)} (Relay:Twins:{key}).");
            default:
                http.Response.Headers.RetryAfter = "1";
                return ApiProblems.Problem(503, "Busy", $"{Capitalized(update.Problem!)}; retry shortly.");
        }
    }

    private static IResult Answer(HttpContext http, TwinView twin)
    {
        http.Response.Headers.ETag = ETag(twin.DesiredVersion);
        return Results.Bytes(Write(twin), "application/json");
    }

    /// <summary>
    /// <c>{"device","desired","desiredVersion","desiredAt","reported","reportedVersion","reportedAt","delta"}</c>;
    /// a time is null before the first update.
    /// </summary>
    internal static byte[] Write(TwinView twin)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            writer.WriteString("device", twin.Device);
            writer.WritePropertyName("desired");
            twin.Desired.WriteTo(writer);
            writer.WriteNumber("desiredVersion", twin.DesiredVersion);
            WriteTime(writer, "desiredAt", twin.DesiredAt);
            writer.WritePropertyName("reported");
            twin.Reported.WriteTo(writer);
            writer.WriteNumber("reportedVersion", twin.ReportedVersion);
            WriteTime(writer, "reportedAt", twin.ReportedAt);
            writer.WritePropertyName("delta");
            twin.Delta.WriteTo(writer);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static void WriteTime(Utf8JsonWriter writer, string name, DateTimeOffset? at)
    {
        if (at is { } value)
        {
            writer.WriteString(name, value);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    private static string ETag(long version) => "\"" + version.ToString(CultureInfo.InvariantCulture) + "\"";

    /// <summary>
    /// RFC 9110 §13.1.1: <c>"N"</c> (or weak <c>W/"N"</c>: the comparison here is the version's) sets the expected
    /// desired version; <c>*</c> or no header leaves it unchecked. A list of tags is not accepted: there is one version.
    /// </summary>
    private static bool TryParseIfMatch(HttpContext http, out long? version)
    {
        version = null;
        var values = http.Request.Headers.IfMatch;
        if (values.Count == 0)
        {
            return true;
        }

        if (values.Count > 1)
        {
            return false;
        }

        var text = values[0]!.Trim();
        if (text == "*")
        {
            return true;
        }

        if (text.StartsWith("W/", StringComparison.Ordinal))
        {
            text = text[2..];
        }

        if (text.Length < 3 || text[0] != '"' || text[^1] != '"'
            || !long.TryParse(text.AsSpan(1, text.Length - 2), NumberStyles.None, CultureInfo.InvariantCulture, out var parsed))
        {
            return false;
        }

        version = parsed;
        return true;
    }

    /// <summary>
    /// Reads the body up to <paramref name="limit"/> bytes: the declared length is checked first, a chunked body is
    /// cut off one byte past it.
    /// </summary>
    private static async Task<(byte[] Body, bool TooLarge)> ReadBodyAsync(HttpContext http, int limit)
    {
        if (http.Request.ContentLength > limit)
        {
            return ([], true);
        }

        var buffer = new byte[Math.Min(limit + 1, (int?)http.Request.ContentLength + 1 ?? 4096)];
        var length = 0;
        while (true)
        {
            if (length == buffer.Length)
            {
                if (length > limit)
                {
                    return ([], true);
                }

                Array.Resize(ref buffer, Math.Min(limit + 1, buffer.Length * 2));
            }

            var read = await http.Request.Body.ReadAsync(buffer.AsMemory(length), http.RequestAborted);
            if (read == 0)
            {
                return (buffer[..length], false);
            }

            length += read;
            if (length > limit)
            {
                return ([], true);
            }
        }
    }

    private static string Capitalized(string text) => text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..];

    private static IResult UnknownDevice(string id) => ApiProblems.NotFound("device", id, "Register it with POST /v1/devices first.");
}
