namespace Relay.Server.Api;

/// <summary><c>/v1/tokens</c>: create (the token is returned once), list (no secrets), revoke. Admin scope.</summary>
internal static class TokenEndpoints
{
    public const int MaxNameLength = 100;
    private const string CreateExample = """{"name": "ci", "scopes": ["push"]}""";

    public static void Map(WebApplication app)
    {
        app.MapPost("/v1/tokens", CreateAsync);
        app.MapGet("/v1/tokens", List);
        app.MapDelete("/v1/tokens/{id}", Revoke);
    }

    private static async Task<IResult> CreateAsync(HttpContext http, ApiTokenStore tokens)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        var (request, error) = await ApiBody.ReadAsync(http, ApiJsonContext.Default.TokenCreateRequest, CreateExample);
        if (error is not null)
        {
            return error;
        }

        var name = request!.Name ?? string.Empty;
        if (name.Length > MaxNameLength || name.Any(char.IsControl))
        {
            return ApiProblems.BadRequest($"'name' must be at most {MaxNameLength} characters without control characters.");
        }

        if (request.Scopes is not { Length: > 0 } names)
        {
            return ApiProblems.BadRequest($"'scopes' must list at least one of {string.Join(", ", ApiScope.All)}, for example {CreateExample}.");
        }

        var scopes = ApiScopes.None;
        foreach (var scopeName in names)
        {
            if (!ApiScope.TryParse(scopeName, out var scope))
            {
                return ApiProblems.BadRequest($"Unknown scope '{scopeName}'; the scopes are {string.Join(", ", ApiScope.All)}.");
            }

            scopes |= scope;
        }

        var (info, token) = tokens.Create(name, scopes);
        return Results.Json(new TokenCreatedResponse(info.Id, info.Name, info.Scopes, info.CreatedAt, token), ApiJsonContext.Default.TokenCreatedResponse, statusCode: 201);
    }

    private static IResult List(HttpContext http, ApiTokenStore tokens) =>
        ApiAuth.Authorize(http, ApiScope.Admin) ?? Results.Json(new TokenListResponse(tokens.List()), ApiJsonContext.Default.TokenListResponse);

    private static IResult Revoke(HttpContext http, ApiTokenStore tokens, ApiRateLimiter limiter, string id)
    {
        if (ApiAuth.Authorize(http, ApiScope.Admin) is { } refused)
        {
            return refused;
        }

        if (!tokens.Revoke(id))
        {
            return ApiProblems.NotFound("token", id, "List token ids with GET /v1/tokens.");
        }

        limiter.Forget(id);
        return Results.NoContent();
    }
}
