using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Relay.Server.Mqtt;

namespace Relay.Server.Push.Commands;

/// <summary>
/// The device side of the command contract (docs/push.md), as a codec: pure and static. A device
/// subscribes to <c>devices/{id}/commands</c> and gets each command as
/// <c>{"id","name","payload"|"payloadBase64","expiresAt"}</c>; it answers on <c>devices/{id}/results</c>
/// with <c>{"id","status":"succeeded"|"failed","payload"?}</c>.
/// </summary>
internal static class CommandWire
{
    public const string TopicPrefix = "devices/";
    public const string CommandsSuffix = "/commands";
    public const string ResultsSuffix = "/results";

    /// <summary>Deepest JSON nesting a result may have.</summary>
    public const int MaxResultDepth = 64;

    private const int EnvelopeRoom = 160;

    public static string CommandsTopic(string device) => TopicPrefix + device + CommandsSuffix;

    public static string ResultsTopic(string device) => TopicPrefix + device + ResultsSuffix;

    /// <summary>The device of a results topic (<c>devices/{id}/results</c>, id one non-empty level); false for any other topic.</summary>
    public static bool TryGetResultsDevice(string topic, out string device)
    {
        device = string.Empty;
        if (!topic.StartsWith(TopicPrefix, StringComparison.Ordinal) || !topic.EndsWith(ResultsSuffix, StringComparison.Ordinal) || topic.Length <= TopicPrefix.Length + ResultsSuffix.Length)
        {
            return false;
        }

        var id = topic[TopicPrefix.Length..^ResultsSuffix.Length];
        if (id.Contains('/', StringComparison.Ordinal))
        {
            return false;
        }

        device = id;
        return true;
    }

    /// <summary>The PUBLISH that carries <paramref name="entry"/> to its device: the envelope at the command's QoS, expiring with it.</summary>
    public static StoredMessage BuildMessage(CommandEntry entry) =>
        BuildMessage(entry, entry.Payload ?? throw new ArgumentException($"Command {entry.Id} has no payload in memory; read it from the store.", nameof(entry)));

    /// <summary>As <see cref="BuildMessage(CommandEntry)"/>, with the payload read from the store (a command reloaded at start holds none).</summary>
    public static StoredMessage BuildMessage(CommandEntry entry, byte[] payload)
    {
        var buffer = new ArrayBufferWriter<byte>(payload.Length + EnvelopeRoom);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("id", entry.Id);
            writer.WriteString("name", entry.Name);
            if (entry.Binary)
            {
                writer.WriteBase64String("payloadBase64", payload);
            }
            else
            {
                // Validated JSON when the command was accepted.
                writer.WritePropertyName("payload");
                writer.WriteRawValue(payload, skipInputValidation: true);
            }

            writer.WriteString("expiresAt", entry.ExpiresAt.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            writer.WriteEndObject();
        }

        // MQTT 5: the request/response pattern of §4.10 (response topic + correlation data = command id);
        // 3.1.1 clients get the same envelope without properties.
        var properties = new MqttMessageProperties(1, "application/json", ResultsTopic(entry.Device), Encoding.UTF8.GetBytes(entry.Id), null);
        return new StoredMessage(CommandsTopic(entry.Device), buffer.WrittenMemory.ToArray(), entry.QoS, false, entry.ExpiresAt, properties);
    }

    /// <summary>
    /// Parses a device's result: <c>{"id": "...", "status": "succeeded"|"failed", "payload": any?}</c>, other
    /// members ignored. False when it is not that (not JSON, not an object, deeper than
    /// <see cref="MaxResultDepth"/>, no id, another status).
    /// </summary>
    public static bool TryParseResult(ReadOnlySpan<byte> json, out DeviceResult result)
    {
        result = default;
        var id = string.Empty;
        string? status = null;
        string? payload = null;
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = MaxResultDepth });
            using var document = JsonDocument.ParseValue(ref reader);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                return false;
            }

            foreach (var property in root.EnumerateObject())
            {
                switch (property.Name)
                {
                    case "id" when property.Value.ValueKind == JsonValueKind.String:
                        id = property.Value.GetString()!;
                        break;
                    case "status" when property.Value.ValueKind == JsonValueKind.String:
                        status = property.Value.GetString();
                        break;
                    case "payload":
                        payload = property.Value.GetRawText();
                        break;
                }
            }
        }
        catch (JsonException)
        {
            return false;
        }

        var succeeded = status == "succeeded";
        if (id.Length == 0 || !(succeeded || status == "failed"))
        {
            return false;
        }

        result = new DeviceResult(id, succeeded, payload);
        return true;
    }
}

/// <summary>A device's result for one command: whether it succeeded, and its payload as JSON text, if any.</summary>
internal readonly record struct DeviceResult(string CommandId, bool Succeeded, string? PayloadJson);
