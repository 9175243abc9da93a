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
/// JSON shape, so a back end can hand them to a browser or device without knowing the secret.
/// </summary>
internal static class TurnCredentialsEndpoint
{
    public const int DefaultTtlSeconds = 86_400;
    public const int MaxTtlSeconds = 7 * 86_400;

    public static void Map(WebApplication app) =>
        app.MapGet("/v1/turn/credentials", static (HttpContext http, AdminTokens tokens, TurnCredentialStore credentials, IOptions<TurnOptions> turn, TurnUris uris) =>
            Handle(http, tokens, credentials, turn.Value, uris));

    private static IResult Handle(HttpContext http, AdminTokens tokens, TurnCredentialStore credentials, TurnOptions turn, TurnUris uris)
    {
        if (!tokens.IsAdmin(http.Request.Headers.Authorization))
        {
            http.Response.Headers.WWWAuthenticate = "Bearer";
            return Problem(401, "Unauthorized", "Send an admin token as 'Authorization: Bearer <token>' (printed at first start, or Relay:Api:BootstrapToken).");
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
        return Results.Json(new TurnCredentialsResponse(username, password, ttlSeconds, [.. uris.For(http.Request.Host.Host)]), ApiJsonContext.Relaxed.TurnCredentialsResponse);
    }

    private static IResult Problem(int status, string title, string detail) =>
        Results.Json(new ProblemResponse("about:blank", title, status, detail), ApiJsonContext.Relaxed.ProblemResponse, "application/problem+json", status);
}
