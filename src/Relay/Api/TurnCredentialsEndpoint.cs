using System.Globalization;
using Microsoft.Extensions.Options;
using Relay.Server.Turn;

namespace Relay.Server.Api;

/// <summary>The draft's response shape (draft-uberti-behave-turn-rest-00 §2.2).</summary>
internal sealed record TurnCredentialsResponse(string Username, string Password, int Ttl, IReadOnlyList<string> Uris);

/// <summary>An RFC 7807 problem body.</summary>
internal sealed record ProblemResponse(string Type, string Title, int Status, string Detail);

/// <summary>
/// <c>GET /v1/turn/credentials?user=NAME&amp;ttl=SECONDS</c>: mints time-limited TURN credentials from
/// the first <c>Relay:Turn:SharedSecrets</c> entry for an admin bearer token, in the TURN REST API's
/// JSON shape, so a back end can hand them to a browser or device without knowing the secret. Authorized
/// like every <c>/v1</c> endpoint (<see cref="ApiAuth"/>: per-token rate limit, failed-token limit per source).
/// </summary>
internal static class TurnCredentialsEndpoint
{
    public const int DefaultTtlSeconds = 86_400;
    public const int MaxTtlSeconds = 7 * 86_400;

    public static void Map(WebApplication app) =>
        app.MapGet("/v1/turn/credentials", static (HttpContext http, TurnCredentialStore credentials, IOptions<TurnOptions> turn, TurnUris uris) =>
            Handle(http, credentials, turn.Value, uris));

    private static IResult Handle(HttpContext http, TurnCredentialStore credentials, TurnOptions turn, TurnUris uris)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        if (!turn.Enabled || !credentials.HasSharedSecrets)
        {
            return Problem(409, "No shared secret", "Time-limited TURN credentials need Relay:Turn:SharedSecrets (and Relay:Turn:Enabled=true).");
        }

        var user = http.Request.Query["user"].ToString();
        if (user.Length > 64 || user.Contains(':', StringComparison.Ordinal) || user.Any(char.IsControl))
        {
            return Problem(400, "Bad user", "'user' must be at most 64 characters, without ':' or control characters.");
        }

        var ttl = DefaultTtlSeconds;
        var ttlText = http.Request.Query["ttl"].ToString();
        if (ttlText.Length > 0 && (!int.TryParse(ttlText, NumberStyles.None, CultureInfo.InvariantCulture, out ttl) || ttl is < 1 or > MaxTtlSeconds))
        {
            return Problem(400, "Bad ttl", $"'ttl' must be whole seconds from 1 to {MaxTtlSeconds}.");
        }

        var (username, password, ttlSeconds) = credentials.MintRestCredential(user, TimeSpan.FromSeconds(ttl));
        return Results.Json(new TurnCredentialsResponse(username, password, ttlSeconds, [.. uris.For(ReachedAddress(http))]), ApiJsonContext.Relaxed.TurnCredentialsResponse);
    }

    /// <summary>
    /// The address of ours the request arrived at. Not the Host header (review L3): the client writes that,
    /// and the URIs built from it are handed on to browsers and devices, which would then relay through
    /// whatever host the caller named.
    /// </summary>
    private static string ReachedAddress(HttpContext http) => http.Connection.LocalIpAddress switch
    {
        { IsIPv4MappedToIPv6: true } mapped => mapped.MapToIPv4().ToString(),
        { } local => local.ToString(),
        null => "127.0.0.1",
    };

    private static IResult Problem(int status, string title, string detail) =>
        Results.Json(new ProblemResponse("about:blank", title, status, detail), ApiJsonContext.Relaxed.ProblemResponse, "application/problem+json", status);
}
