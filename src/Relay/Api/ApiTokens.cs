using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Relay.Server.Api;

/// <summary>What a token may do. Admin grants everything; push grants read too (a pusher must see the results).</summary>
[Flags]
internal enum ApiScopes
{
    None = 0,
    Read = 1,
    Push = 2,
    Admin = 4,
}

/// <summary>Scope names as they appear in the API, the CLI and the token file.</summary>
internal static class ApiScope
{
    public const string Read = "read";
    public const string Push = "push";
    public const string Admin = "admin";

    public static readonly IReadOnlyList<string> All = [Read, Push, Admin];

    public static bool TryParse(string? name, out ApiScopes scope)
    {
        scope = name switch
        {
            Read => ApiScopes.Read,
            Push => ApiScopes.Push,
            Admin => ApiScopes.Admin,
            _ => ApiScopes.None,
        };
        return scope != ApiScopes.None;
    }

    /// <summary>The scopes a token holding <paramref name="granted"/> effectively has.</summary>
    public static ApiScopes Effective(ApiScopes granted) =>
        granted.HasFlag(ApiScopes.Admin) ? ApiScopes.Read | ApiScopes.Push | ApiScopes.Admin
        : granted.HasFlag(ApiScopes.Push) ? granted | ApiScopes.Read
        : granted;

    public static string[] Names(ApiScopes scopes) =>
        [.. All.Where(n => TryParse(n, out var s) && scopes.HasFlag(s))];
}

/// <summary>A token as listed: never its secret, never its hash.</summary>
internal sealed record ApiTokenInfo(string Id, string Name, IReadOnlyList<string> Scopes, DateTimeOffset CreatedAt);

/// <summary>One line of <c>api-tokens.json</c>: the SHA-256 of the token, hex.</summary>
internal sealed record StoredApiToken(string Id, string Name, string[] Scopes, DateTimeOffset CreatedAt, string Sha256);

/// <summary>
/// API tokens with scopes, kept in <c>api-tokens.json</c> in the data directory as SHA-256 hashes only:
/// a copied data directory does not give the tokens away. Tokens are 32 random bytes, so an unsalted
/// fast hash is enough (nothing to brute-force), and the lookup is by hash: finding the right entry
/// by timing would need a SHA-256 preimage. The file is small (operators create tokens by hand) and
/// is rewritten whole, through a temporary file and a rename, so a crash leaves the old or the new list.
/// </summary>
internal sealed class ApiTokenStore
{
    public const string FileName = "api-tokens.json";
    public const string Prefix = "rlyt_";

    private readonly string _file;
    private readonly TimeProvider _time;
    private readonly Lock _writeLock = new();
    private volatile Dictionary<string, StoredApiToken> _byHash;

    private ApiTokenStore(string file, TimeProvider time, Dictionary<string, StoredApiToken> byHash)
    {
        _file = file;
        _time = time;
        _byHash = byHash;
    }

    public static ApiTokenStore Load(string dataDirectory, TimeProvider time)
    {
        var file = Path.Combine(dataDirectory, FileName);
        var byHash = new Dictionary<string, StoredApiToken>(StringComparer.Ordinal);
        if (File.Exists(file))
        {
            StoredApiToken[]? tokens;
            try
            {
                tokens = JsonSerializer.Deserialize(File.ReadAllText(file), ApiJsonContext.TokenFile.StoredApiTokenArray);
            }
            catch (JsonException e)
            {
                throw new Hosting.RelayConfigurationException($"Relay:DataDirectory: '{file}' is not a valid token list ({e.Message}); fix it or move it away (every API token in it stops working)");
            }

            foreach (var token in tokens ?? [])
            {
                byHash[token.Sha256] = token;
            }
        }

        return new ApiTokenStore(file, time, byHash);
    }

    /// <summary>The token with this SHA-256 (hex, lower case), or null.</summary>
    public (string Id, ApiScopes Scopes)? Find(ReadOnlySpan<byte> sha256)
    {
        if (!_byHash.TryGetValue(Convert.ToHexStringLower(sha256), out var token))
        {
            return null;
        }

        var scopes = ApiScopes.None;
        foreach (var name in token.Scopes)
        {
            if (ApiScope.TryParse(name, out var s))
            {
                scopes |= s;
            }
        }

        return (token.Id, scopes);
    }

    /// <summary>Mints a token; the returned secret is shown once and never stored.</summary>
    public (ApiTokenInfo Info, string Token) Create(string name, ApiScopes scopes)
    {
        ArgumentNullException.ThrowIfNull(name);
        var secret = Prefix + Base64Url(RandomNumberGenerator.GetBytes(32));
        var stored = new StoredApiToken(
            Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)),
            name,
            ApiScope.Names(scopes),
            _time.GetUtcNow(),
            Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret))));
        lock (_writeLock)
        {
            var next = new Dictionary<string, StoredApiToken>(_byHash, StringComparer.Ordinal) { [stored.Sha256] = stored };
            Save(next);
            _byHash = next;
        }

        return (Info(stored), secret);
    }

    public IReadOnlyList<ApiTokenInfo> List() =>
        [.. _byHash.Values.OrderBy(static t => t.CreatedAt).ThenBy(static t => t.Id, StringComparer.Ordinal).Select(Info)];

    /// <summary>False when no token has this id.</summary>
    public bool Revoke(string id)
    {
        lock (_writeLock)
        {
            var next = new Dictionary<string, StoredApiToken>(_byHash, StringComparer.Ordinal);
            var victim = next.Values.FirstOrDefault(t => string.Equals(t.Id, id, StringComparison.Ordinal));
            if (victim is null)
            {
                return false;
            }

            next.Remove(victim.Sha256);
            Save(next);
            _byHash = next;
            return true;
        }
    }

    private static ApiTokenInfo Info(StoredApiToken t) => new(t.Id, t.Name, t.Scopes, t.CreatedAt);

    private void Save(Dictionary<string, StoredApiToken> tokens)
    {
        var temporary = _file + ".tmp";
        Hosting.PrivateFiles.WriteAllText(temporary, JsonSerializer.Serialize(tokens.Values.ToArray(), ApiJsonContext.TokenFile.StoredApiTokenArray));

        File.Move(temporary, _file, overwrite: true);
    }

    internal static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
