using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Relay.Server.Api;

/// <summary>
/// The one authorization check every <c>/v1</c> endpoint makes first:
/// <c>if (ApiAuth.Authorize(http, ApiScope.Push) is { } refused) return refused;</c>
/// </summary>
internal static class ApiAuth
{
    private const string Scheme = "Bearer ";
    private const string PrincipalKey = "Relay.Server.Api.Principal";

    // Tokens are at most a few dozen characters; hashing an arbitrarily long header would be free work for an attacker.
    private const int MaxTokenLength = 512;

    /// <summary>
    /// Null when the request's bearer token holds <paramref name="scope"/> (read, push or admin) and is
    /// within its rate limit. Otherwise the problem to return: 401 (no or unknown token, with
    /// <c>WWW-Authenticate: Bearer</c>), 403 (the token lacks the scope) or 429 (with <c>Retry-After</c>:
    /// the token is over its rate limit, or its source over Relay:Api:AuthFailuresPerMinutePerIp).
    /// </summary>
    public static IResult? Authorize(HttpContext http, string scope)
    {
        ArgumentNullException.ThrowIfNull(http);
        if (!ApiScope.TryParse(scope, out var required))
        {
            throw new ArgumentException($"unknown scope '{scope}'", nameof(scope));
        }

        var services = http.RequestServices;
        var metrics = services.GetRequiredService<ApiMetrics>();

        // An attempt is taken before the token is looked at and given back when it is good (review L3): a
        // source that keeps presenting wrong tokens is refused unchecked, so it cannot guess on.
        var failures = services.GetRequiredService<ApiAuthFailureLimiter>();
        var source = http.Connection.RemoteIpAddress;
        if (!failures.TryAcquire(source))
        {
            http.Response.Headers.RetryAfter = failures.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
            return ApiProblems.Problem(429, "Too many failed authentications", $"More than {failures.FailuresPerMinute} requests a minute from this address had a missing or wrong token (Relay:Api:AuthFailuresPerMinutePerIp); retry after {failures.RetryAfterSeconds} s with a valid token.");
        }

        var principal = Authenticate(http, services.GetRequiredService<AdminTokens>(), services.GetRequiredService<ApiTokenStore>());
        if (principal is null)
        {
            metrics.CountUnauthorized();
            http.Response.Headers.WWWAuthenticate = "Bearer";
            return ApiProblems.Problem(401, "Unauthorized", "Send an API token as 'Authorization: Bearer <token>'. The admin token is printed at first start (or set Relay:Api:BootstrapToken); create others with POST /v1/tokens or 'relay api token create'.");
        }

        failures.Refund(source);

        if (!ApiScope.Effective(principal.Value.Scopes).HasFlag(required))
        {
            metrics.CountForbidden();
            return ApiProblems.Problem(403, "Forbidden", $"This token lacks the '{scope}' scope (it has: {string.Join(", ", ApiScope.Names(principal.Value.Scopes))}). Create a token with --scope {scope}.");
        }

        if (!services.GetRequiredService<ApiRateLimiter>().TryAcquire(principal.Value.Id, out var retryAfter))
        {
            metrics.CountRateLimited();
            http.Response.Headers.RetryAfter = ((int)Math.Max(1, retryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
            return ApiProblems.Problem(429, "Too many requests", $"This token is over its rate limit (Relay:Api:RateLimit); retry after {retryAfter.TotalSeconds:0} s.");
        }

        http.Items[PrincipalKey] = principal.Value.Id;
        return null;
    }

    /// <summary>The id of the token that <see cref="Authorize"/> accepted ("admin" for admin tokens), or null.</summary>
    public static string? TokenId(HttpContext http) => http.Items.TryGetValue(PrincipalKey, out var id) ? id as string : null;

    private static (string Id, ApiScopes Scopes)? Authenticate(HttpContext http, AdminTokens admin, ApiTokenStore tokens)
    {
        string? header = http.Request.Headers.Authorization;
        if (header is null || !header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var token = header.AsSpan(Scheme.Length).Trim();
        if (token.IsEmpty || token.Length > MaxTokenLength)
        {
            return null;
        }

        Span<byte> utf8 = stackalloc byte[MaxTokenLength * 3];
        var length = Encoding.UTF8.GetBytes(token, utf8);
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(utf8[..length], hash);
        if (admin.IsAdminHash(hash))
        {
            return ("admin", ApiScopes.Admin);
        }

        return tokens.Find(hash);
    }
}

/// <summary>RFC 7807 problem responses with a message a person can act on.</summary>
internal static class ApiProblems
{
    public static IResult Problem(int status, string title, string detail) =>
        Results.Json(new ProblemResponse("about:blank", title, status, detail), ApiJsonContext.Relaxed.ProblemResponse, "application/problem+json", status);

    public static IResult NotFound(string what, string id, string hint) => Problem(404, $"Unknown {what}", $"No {what} '{id}'. {hint}");

    public static IResult BadRequest(string detail) => Problem(400, "Bad request", detail);
}
