using System.Security.Cryptography;
using System.Text;

namespace Relay.Server.Api;

/// <summary>
/// Admin bearer tokens: <c>Relay:Api:BootstrapToken</c> and the one generated on first start. Only
/// SHA-256 hashes are kept, on disk and in memory, and compared in constant time, so neither a leaked
/// data directory nor response timing gives the token away.
/// </summary>
internal sealed class AdminTokens
{
    public const string FileName = "admin-token.sha256";

    private readonly byte[][] _hashes;

    private AdminTokens(byte[][] hashes, string? generatedToken, string file)
    {
        _hashes = hashes;
        GeneratedToken = generatedToken;
        File = file;
    }

    /// <summary>The token minted by this start, to print once; null when it was minted before.</summary>
    public string? GeneratedToken { get; }

    /// <summary>Where the generated token's hash lives.</summary>
    public string File { get; }

    /// <summary>Loads the stored hash, or mints a token when there is none and no bootstrap token is set.</summary>
    public static AdminTokens Load(ApiOptions options, string dataDirectory)
    {
        var file = Path.Combine(dataDirectory, FileName);
        var hashes = new List<byte[]>();
        string? generated = null;
        if (!string.IsNullOrEmpty(options.BootstrapToken))
        {
            hashes.Add(Hash(options.BootstrapToken));
        }

        if (System.IO.File.Exists(file))
        {
            var text = System.IO.File.ReadAllText(file).Trim();
            try
            {
                hashes.Add(Convert.FromHexString(text));
            }
            catch (FormatException)
            {
                throw new Hosting.RelayConfigurationException($"Relay:DataDirectory: '{file}' should hold a hex SHA-256 hash; delete it to mint a new admin token");
            }
        }
        else if (hashes.Count == 0)
        {
            generated = "rly_" + Base64Url(RandomNumberGenerator.GetBytes(32));
            hashes.Add(Hash(generated));
        }

        return new AdminTokens([.. hashes], generated, file);
    }

    /// <summary>
    /// Keeps the generated token's hash. Called once the server is up and about to print the token:
    /// a start that fails (a port in use) must not store a token nobody was ever shown.
    /// </summary>
    public void PersistGenerated()
    {
        if (GeneratedToken is null || System.IO.File.Exists(File))
        {
            return;
        }

        System.IO.File.WriteAllText(File, Convert.ToHexStringLower(Hash(GeneratedToken)) + "\n");
        if (!OperatingSystem.IsWindows())
        {
            System.IO.File.SetUnixFileMode(File, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }

    /// <summary>True for an <c>Authorization: Bearer</c> value that is one of the admin tokens.</summary>
    public bool IsAdmin(string? authorization)
    {
        const string scheme = "Bearer ";
        if (authorization is null || !authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var presented = Hash(authorization[scheme.Length..].Trim());
        var match = false;
        foreach (var hash in _hashes)
        {
            match |= CryptographicOperations.FixedTimeEquals(presented, hash);
        }

        return match;
    }

    /// <summary>True when <paramref name="sha256"/> is the hash of one of the admin tokens (constant time).</summary>
    public bool IsAdminHash(ReadOnlySpan<byte> sha256)
    {
        var match = false;
        foreach (var hash in _hashes)
        {
            match |= CryptographicOperations.FixedTimeEquals(sha256, hash);
        }

        return match;
    }

    private static byte[] Hash(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
