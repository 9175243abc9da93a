using System.Buffers;
using System.Globalization;
using System.Text.Json;

namespace Relay.DeviceClient.Internal;

/// <summary>The JSON bodies of the command plane as the device reads and writes them (docs/push.md).</summary>
internal static class CommandCodec
{
    /// <summary>The command body of docs/push.md: id, name, payload | payloadBase64, expiresAt.</summary>
    public static bool TryParseCommand(byte[] body, out string id, out string name, out JsonElement payload, out byte[]? payloadBytes, out DateTimeOffset? expiresAt, out string problem)
    {
        id = name = problem = string.Empty;
        payload = default;
        payloadBytes = null;
        expiresAt = null;
        try
        {
            using var document = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("id", out var idElement) || idElement.ValueKind != JsonValueKind.String
                || !root.TryGetProperty("name", out var nameElement) || nameElement.ValueKind != JsonValueKind.String)
            {
                problem = "it needs string \"id\" and \"name\" properties.";
                return false;
            }

            id = idElement.GetString()!;
            name = nameElement.GetString()!;
            payload = root.TryGetProperty("payload", out var p) ? p.Clone() : default;
            if (root.TryGetProperty("payloadBase64", out var b64) && b64.ValueKind == JsonValueKind.String)
            {
                if (!b64.TryGetBytesFromBase64(out payloadBytes))
                {
                    problem = $"command {id}: payloadBase64 is not base64.";
                    return false;
                }
            }

            if (root.TryGetProperty("expiresAt", out var e) && e.ValueKind == JsonValueKind.String)
            {
                if (!DateTimeOffset.TryParse(e.GetString(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at))
                {
                    problem = $"command {id}: expiresAt is not an ISO-8601 time.";
                    return false;
                }

                expiresAt = at;
            }

            if (payload.ValueKind == JsonValueKind.Undefined)
            {
                using var nullDocument = JsonDocument.Parse("null"u8.ToArray());
                payload = nullDocument.RootElement.Clone();
            }

            return true;
        }
        catch (JsonException ex)
        {
            problem = "it is not JSON: " + ex.Message;
            return false;
        }
    }

    /// <summary>{"id","status":"succeeded"|"failed","payload"} (docs/push.md "Results").</summary>
    public static byte[] ResultBody(string id, CommandResult result)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteString("status", result.Succeeded ? "succeeded" : "failed");
            if (result.Succeeded)
            {
                if (result.PayloadUtf8Json is { } payload)
                {
                    w.WritePropertyName("payload");
                    w.WriteRawValue(payload);
                }
            }
            else
            {
                w.WriteStartObject("payload");
                w.WriteString("error", result.Error);
                if (result.PayloadUtf8Json is { } details)
                {
                    w.WritePropertyName("details");
                    w.WriteRawValue(details);
                }

                w.WriteEndObject();
            }

            w.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }
}
