using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Relay.Server.Api;

/// <summary>
/// Every JSON body of the push API, and <c>api-tokens.json</c>: source-generated (trimming- and AOT-safe),
/// properties named in camelCase (a name that is not its property's camelCase, like <c>qos</c>, is spelled out
/// on the property). One type list, three option sets, each writing what it wrote before:
/// <see cref="JsonSerializerContext"/>'s <c>Default</c> for the device and token endpoints, <see cref="Relaxed"/>
/// for commands, TURN credentials and problem details, <see cref="TokenFile"/> for the token file.
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(DeviceCreateRequest))]
[JsonSerializable(typeof(DeviceCredentialsResponse))]
[JsonSerializable(typeof(DeviceResponse))]
[JsonSerializable(typeof(DeviceListResponse))]
[JsonSerializable(typeof(DeviceTagsRequest))]
[JsonSerializable(typeof(TokenCreateRequest))]
[JsonSerializable(typeof(TokenCreatedResponse))]
[JsonSerializable(typeof(TokenListResponse))]
[JsonSerializable(typeof(CommandAccepted))]
[JsonSerializable(typeof(CommandResponse))]
[JsonSerializable(typeof(CommandHistoryResponse))]
[JsonSerializable(typeof(BroadcastResponse))]
[JsonSerializable(typeof(TurnCredentialsResponse))]
[JsonSerializable(typeof(ProblemResponse))]
[JsonSerializable(typeof(StoredApiToken[]))]
internal sealed partial class ApiJsonContext : JsonSerializerContext
{
    private static ApiJsonContext? s_relaxed;
    private static ApiJsonContext? s_tokenFile;

    /// <summary>
    /// Escapes only what JSON requires. TURN passwords and result payloads carry '+', '&lt;' and non-ASCII
    /// text, which the default encoder writes as <c>\u002B</c> and the like: valid, but not what an operator
    /// pasting a password into a client config expects. The bodies are JSON, never HTML, so relaxed is safe.
    /// </summary>
    public static ApiJsonContext Relaxed => s_relaxed ??= With(static options => options.Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping);

    /// <summary><c>api-tokens.json</c>, indented for an operator reading it.</summary>
    public static ApiJsonContext TokenFile => s_tokenFile ??= With(static options => options.WriteIndented = true);

    // A copy of Default's options (so camelCase with them), changed; built on first use, after Default exists.
    private static ApiJsonContext With(Action<JsonSerializerOptions> change)
    {
        var options = new JsonSerializerOptions(Default.Options);
        change(options);
        return new ApiJsonContext(options);
    }
}
