using System.Text.Json;
using System.Text.Json.Nodes;

namespace Relay.DeviceClient;

/// <summary>A command from the server (docs/push.md: <c>devices/{id}/commands</c>).</summary>
public sealed class DeviceCommand
{
    internal DeviceCommand(string id, string name, JsonElement payload, byte[]? payloadBytes, DateTimeOffset? expiresAt, int deliveryCount)
    {
        Id = id;
        Name = name;
        Payload = payload;
        PayloadBytes = payloadBytes;
        ExpiresAt = expiresAt;
        DeliveryCount = deliveryCount;
    }

    /// <summary>The command id (32 hex digits).</summary>
    public string Id { get; }

    /// <summary>What to do.</summary>
    public string Name { get; }

    /// <summary>The JSON payload the sender gave (a JSON null when none, or when it sent bytes).</summary>
    public JsonElement Payload { get; }

    /// <summary>The bytes of <c>payloadBase64</c>, when the sender sent bytes.</summary>
    public byte[]? PayloadBytes { get; }

    /// <summary>After this the command should not be acted on; the handler's token is canceled then.</summary>
    public DateTimeOffset? ExpiresAt { get; }

    /// <summary>How many times this client has received the command (1 the first time).</summary>
    public int DeliveryCount { get; }
}

/// <summary>What a command handler reports (published to <c>devices/{id}/results</c>).</summary>
public sealed class CommandResult
{
    private CommandResult(bool succeeded, string? error, byte[]? payloadUtf8Json)
    {
        Succeeded = succeeded;
        Error = error;
        PayloadUtf8Json = payloadUtf8Json;
    }

    /// <summary>True for status "succeeded".</summary>
    public bool Succeeded { get; }

    /// <summary>Why it failed; null on success.</summary>
    public string? Error { get; }

    /// <summary>The result payload as UTF-8 JSON; null for none.</summary>
    public ReadOnlyMemory<byte>? Payload => PayloadUtf8Json;

    internal byte[]? PayloadUtf8Json { get; }

    /// <summary>Success with an optional JSON payload.</summary>
    public static CommandResult Success(JsonNode? payload = null) => new(true, null, ToUtf8(payload));

    /// <summary>Success with a payload that is already UTF-8 JSON (validated when written).</summary>
    public static CommandResult Success(ReadOnlyMemory<byte> utf8Json) => new(true, null, utf8Json.ToArray());

    /// <summary>Failure: the result payload is <c>{"error": error}</c>, plus <c>"details": payload</c> when given.</summary>
    public static CommandResult Failure(string error, JsonNode? payload = null)
    {
        ArgumentNullException.ThrowIfNull(error);
        return new(false, error, ToUtf8(payload));
    }

    private static byte[]? ToUtf8(JsonNode? node)
    {
        if (node is null)
        {
            return null;
        }

        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            node.WriteTo(writer);
        }

        return buffer.ToArray();
    }
}
