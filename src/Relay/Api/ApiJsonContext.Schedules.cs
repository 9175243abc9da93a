using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Relay.Server.Api;

/// <summary>
/// The schedule endpoints' JSON bodies, written like <see cref="ApiJsonContext.Relaxed"/> (camelCase, relaxed
/// escaping). A context of its own because the JSON source generator cannot take <c>[JsonSerializable]</c>
/// attributes on more than one partial declaration of one context (dotnet/runtime#99669: it generates each
/// declaration's file twice and the build fails).
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ScheduleResponse))]
[JsonSerializable(typeof(ScheduleListResponse))]
internal sealed partial class ScheduleJsonContext : JsonSerializerContext
{
    private static ScheduleJsonContext? s_relaxed;

    /// <summary>As <see cref="ApiJsonContext.Relaxed"/>: the bodies are JSON, never HTML.</summary>
    public static ScheduleJsonContext Relaxed =>
        s_relaxed ??= new ScheduleJsonContext(new JsonSerializerOptions(Default.Options) { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
}
