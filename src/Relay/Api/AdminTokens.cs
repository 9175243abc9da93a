using System.Security.Cryptography;
using System.Text;

namespace Relay.Server.Api;

/// <summary>
/// Admin bearer tokens: <c>Relay:Api:BootstrapToken</c> or, when it is not set, the one generated on first
/// start. Only SHA-256 hashes are kept, on disk and in memory, and compared in constant time, so neither a
/// leaked data directory nor response timing gives the token away. Setting a bootstrap token revokes the
/// generated one for good (its hash file is deleted), so an operator who set one to replace a token that
/// leaked is not left with the leaked one still working (review L3).
/// </summary>
internal sealed class AdminTokens
{
    public const string FileName = "admin-token.sha256";

    /// <summary>Shortest bootstrap token accepted: it is a password for everything the API can do.</summary>
    public const int MinBootstrapLength = 24;

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

    /// <summary>
    /// With <c>Relay:Api:BootstrapToken</c> set: that token, and the generated one's hash file is deleted.
    /// Otherwise the stored hash, or a token minted now when there is none. Throws
    /// <see cref="Hosting.RelayConfigurationException"/> for a weak bootstrap token.
    /// </summary>
    public static AdminTokens Load(ApiOptions options, string dataDirectory)
    {
        var file = Path.Combine(dataDirectory, FileName);
        var hashes = new List<byte[]>();
        string? generated = null;
        if (!string.IsNullOrEmpty(options.BootstrapToken))
        {
            if (!IsStrongEnough(options.BootstrapToken))
            {
                // The value is not repeated: an error message ends up in logs.
                throw new Hosting.RelayConfigurationException($"Relay:Api:BootstrapToken: must be at least {MinBootstrapLength} characters, without spaces or control characters (it grants everything the API can do); generate one, e.g. with 'openssl rand -base64 32'");
            }

            hashes.Add(Hash(options.BootstrapToken));
            try
            {
                System.IO.File.Delete(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new Hosting.RelayConfigurationException($"Relay:DataDirectory: cannot delete '{file}' to revoke the generated admin token now that Relay:Api:BootstrapToken is set ({e.Message})");
            }
        }
        else if (System.IO.File.Exists(file))
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
        else
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

        Hosting.PrivateFiles.WriteAllText(File, Convert.ToHexStringLower(Hash(GeneratedToken)) + "\n");
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

    private static bool IsStrongEnough(string token) =>
        token.Length >= MinBootstrapLength && !token.Any(static c => char.IsWhiteSpace(c) || char.IsControl(c));

    private static byte[] Hash(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
