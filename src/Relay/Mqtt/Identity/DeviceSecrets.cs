using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;

namespace Relay.Server.Mqtt.Identity;

/// <summary>Device ids: they become MQTT topic levels (<c>devices/{id}/...</c>), so no <c>/</c>, <c>+</c> or <c>#</c>.</summary>
internal static class DeviceId
{
    public const int MaxLength = 128;

    /// <summary><c>[A-Za-z0-9._-]{1,128}</c>.</summary>
    public static bool IsValid(ReadOnlySpan<char> id)
    {
        if (id.IsEmpty || id.Length > MaxLength)
        {
            return false;
        }

        foreach (var c in id)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>
/// Device tags: short labels (<c>[A-Za-z0-9._:-]{1,64}</c>, at most <see cref="MaxCount"/> per device) that
/// the API filters and broadcasts by. Case-sensitive, stored de-duplicated in the order given.
/// </summary>
internal static class DeviceTags
{
    public const int MaxLength = 64;
    public const int MaxCount = 32;

    public const string Rule = "[A-Za-z0-9._:-]{1,64}";

    public static bool IsValid(ReadOnlySpan<char> tag)
    {
        if (tag.IsEmpty || tag.Length > MaxLength)
        {
            return false;
        }

        foreach (var c in tag)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or ':'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Null when every tag is valid and there are at most <see cref="MaxCount"/>; otherwise what is wrong.</summary>
    public static string? Validate(IReadOnlyList<string> tags)
    {
        ArgumentNullException.ThrowIfNull(tags);
        if (tags.Count > MaxCount)
        {
            return $"at most {MaxCount} tags per device (got {tags.Count})";
        }

        foreach (var tag in tags)
        {
            if (tag is null || !IsValid(tag))
            {
                return $"tag '{tag}' must match {Rule}";
            }
        }

        return null;
    }

    /// <summary>The tags without duplicates, first occurrence kept.</summary>
    public static string[] Normalize(IReadOnlyList<string> tags) => [.. tags.Distinct(StringComparer.Ordinal)];
}

/// <summary>What a secret check found.</summary>
internal enum SecretCheck
{
    /// <summary>No device with that id.</summary>
    UnknownDevice,

    /// <summary>The secret is the device's.</summary>
    Match,

    /// <summary>The device exists; the secret is not its own.</summary>
    Mismatch,

    /// <summary>Not checked: the slow-hash pool is full. Answer "server busy"; the device retries.</summary>
    Busy,
}

/// <summary>How a stored secret hash is checked.</summary>
internal enum SecretHashKind
{
    /// <summary>Not a hash this build understands (damaged or foreign): never matches.</summary>
    Invalid,

    /// <summary>One keyed hash (HMAC-SHA256): microseconds, for secrets the server generated.</summary>
    Fast,

    /// <summary>PBKDF2-SHA256: tens of milliseconds, for secrets people chose; verified on the bounded pool.</summary>
    Slow,
}

/// <summary>
/// Device secrets at rest. Two schemes, chosen by what the secret is:
/// <list type="bullet">
/// <item>a secret of the form the server generates (32 random bytes, base64url: 43 characters) is stored as
/// <c>hmac-sha256$salt$mac</c>, an HMAC-SHA256 keyed by a random 16-byte per-device salt. 256 random bits
/// cannot be guessed, so stretching adds nothing, and a fleet of 10,000 devices reconnecting after a restart
/// costs milliseconds of CPU instead of minutes;</item>
/// <item>any other secret (chosen by a person, possibly weak) is stored as
/// <c>pbkdf2-sha256$iterations$salt$hash</c>, PBKDF2-HMAC-SHA256 with a random 16-byte salt.</item>
/// </list>
/// Only hashes are stored; every comparison is constant-time.
/// </summary>
internal static class DeviceSecretHasher
{
    public const int DefaultIterations = 100_000;

    // A stored hash with more iterations than this is treated as damaged: verifying it would let a
    // tampered row pin a core per connect.
    public const int MaxIterations = 10_000_000;

    /// <summary>Length of a generated secret: 32 bytes in base64url without padding.</summary>
    public const int GeneratedLength = 43;

    private const string SlowScheme = "pbkdf2-sha256";
    private const string FastScheme = "hmac-sha256";
    private const int SaltBytes = 16;
    private const int HashBytes = 32;

    // A 32-byte random string has about 30 distinct byte values; fewer than this means a person typed
    // something shaped like a generated secret ("aaaa...") and it gets the slow hash.
    private const int MinDistinctBytes = 16;

    /// <summary>Hashes <paramref name="secretUtf8"/> with the scheme its form calls for (<see cref="IsGeneratedForm"/>).</summary>
    public static string Hash(ReadOnlySpan<byte> secretUtf8, int iterations) =>
        IsGeneratedForm(secretUtf8) ? HashFast(secretUtf8) : HashSlow(secretUtf8, iterations);

    /// <summary>PBKDF2, whatever the secret's form.</summary>
    public static string HashSlow(ReadOnlySpan<byte> secretUtf8, int iterations)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(iterations, MaxIterations);
        Span<byte> salt = stackalloc byte[SaltBytes];
        Span<byte> hash = stackalloc byte[HashBytes];
        RandomNumberGenerator.Fill(salt);
        Rfc2898DeriveBytes.Pbkdf2(secretUtf8, salt, hash, iterations, HashAlgorithmName.SHA256);
        return string.Create(CultureInfo.InvariantCulture, $"{SlowScheme}${iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}");
    }

    /// <summary>One HMAC-SHA256 keyed by a random salt; only for secrets of the generated form.</summary>
    public static string HashFast(ReadOnlySpan<byte> secretUtf8)
    {
        Span<byte> salt = stackalloc byte[SaltBytes];
        Span<byte> mac = stackalloc byte[HashBytes];
        RandomNumberGenerator.Fill(salt);
        HMACSHA256.HashData(salt, secretUtf8, mac);
        return string.Create(CultureInfo.InvariantCulture, $"{FastScheme}${Convert.ToBase64String(salt)}${Convert.ToBase64String(mac)}");
    }

    /// <summary>Which check <paramref name="stored"/> needs (by its scheme prefix; the rest is parsed when verifying).</summary>
    public static SecretHashKind KindOf(string stored) =>
        stored.StartsWith(FastScheme + "$", StringComparison.Ordinal) ? SecretHashKind.Fast
        : stored.StartsWith(SlowScheme + "$", StringComparison.Ordinal) ? SecretHashKind.Slow
        : SecretHashKind.Invalid;

    /// <summary>
    /// Whether <paramref name="secretUtf8"/> has the form <see cref="Generate"/> produces: 43 base64url
    /// characters decoding to 32 bytes that look random. Such secrets get the fast hash.
    /// </summary>
    public static bool IsGeneratedForm(ReadOnlySpan<byte> secretUtf8)
    {
        if (secretUtf8.Length != GeneratedLength)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[HashBytes];
        if (Base64Url.DecodeFromUtf8(secretUtf8, bytes, out var consumed, out var written) != System.Buffers.OperationStatus.Done
            || consumed != GeneratedLength || written != HashBytes)
        {
            return false;
        }

        Span<bool> seen = stackalloc bool[256];
        var distinct = 0;
        foreach (var b in bytes)
        {
            if (!seen[b])
            {
                seen[b] = true;
                distinct++;
            }
        }

        return distinct >= MinDistinctBytes;
    }

    /// <summary>False for a wrong secret and for a stored value that is not in an expected format.</summary>
    public static bool Verify(ReadOnlySpan<byte> secretUtf8, string stored)
    {
        ArgumentNullException.ThrowIfNull(stored);
        return KindOf(stored) switch
        {
            SecretHashKind.Fast => VerifyFast(secretUtf8, stored),
            SecretHashKind.Slow => VerifySlow(secretUtf8, stored),
            _ => false,
        };
    }

    /// <summary>
    /// The cost of a fast verification with no stored hash to compare with, so that an unknown device id
    /// takes as long to refuse as a known one with a wrong generated secret.
    /// </summary>
    public static void VerifyNothing(ReadOnlySpan<byte> secretUtf8)
    {
        Span<byte> key = stackalloc byte[SaltBytes];
        Span<byte> mac = stackalloc byte[HashBytes];
        HMACSHA256.HashData(key, secretUtf8, mac);
        _ = CryptographicOperations.FixedTimeEquals(mac, mac);
    }

    private static bool VerifyFast(ReadOnlySpan<byte> secretUtf8, string stored)
    {
        var parts = stored.Split('$');
        Span<byte> salt = stackalloc byte[64];
        Span<byte> expected = stackalloc byte[HashBytes];
        Span<byte> actual = stackalloc byte[HashBytes];
        if (parts.Length != 3
            || !Convert.TryFromBase64String(parts[1], salt, out var saltLength)
            || !Convert.TryFromBase64String(parts[2], expected, out var macLength) || macLength != HashBytes)
        {
            return false;
        }

        HMACSHA256.HashData(salt[..saltLength], secretUtf8, actual);
        return CryptographicOperations.FixedTimeEquals(actual, expected);
    }

    private static bool VerifySlow(ReadOnlySpan<byte> secretUtf8, string stored)
    {
        var parts = stored.Split('$');
        if (parts.Length != 4
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var iterations)
            || iterations < 1 || iterations > MaxIterations)
        {
            return false;
        }

        Span<byte> salt = stackalloc byte[64];
        Span<byte> expected = stackalloc byte[HashBytes];
        Span<byte> actual = stackalloc byte[HashBytes];
        if (!Convert.TryFromBase64String(parts[2], salt, out var saltLength)
            || !Convert.TryFromBase64String(parts[3], expected, out var hashLength) || hashLength != HashBytes)
        {
            return false;
        }

        Rfc2898DeriveBytes.Pbkdf2(secretUtf8, salt[..saltLength], actual, iterations, HashAlgorithmName.SHA256);
        return CryptographicOperations.FixedTimeEquals(actual, expected);
    }

    /// <summary>A fresh secret: 32 random bytes, base64url (43 characters, safe in shells and URLs).</summary>
    public static string Generate()
    {
        Span<byte> bytes = stackalloc byte[32];
        while (true)
        {
            RandomNumberGenerator.Fill(bytes);
            var secret = Base64Url.EncodeToString(bytes);

            // Practically always true at once; the loop only guarantees the fast hash for what we hand out.
            if (IsGeneratedForm(System.Text.Encoding.ASCII.GetBytes(secret)))
            {
                return secret;
            }
        }
    }
}
