namespace Relay.Server.Api;

/// <summary>
/// <c>GET /openapi.json</c>: the API described by hand in <c>openapi.json</c> (an embedded resource).
/// Microsoft.AspNetCore.OpenApi is not in the offline package cache, and its generator needs
/// reflection over the endpoints; a test checks that every mapped <c>/v1</c> route is in the document.
/// </summary>
internal static class OpenApiDocument
{
    public const string Path = "/openapi.json";
    private const string ResourceName = "Relay.Api.openapi.json";

    private static readonly Lazy<byte[]> Document = new(static () =>
    {
        using var stream = typeof(OpenApiDocument).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ResourceName} is missing from the build");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    });

    /// <summary>The document's bytes (UTF-8 JSON).</summary>
    public static ReadOnlyMemory<byte> Bytes => Document.Value;

    // Public, like /healthz: the document holds no secrets and clients generate code from it.
    public static void Map(WebApplication app) =>
        app.MapGet(Path, static () => Results.Bytes(Document.Value, "application/json"));
}
