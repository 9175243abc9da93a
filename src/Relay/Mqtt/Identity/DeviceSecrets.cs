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

/// <summary>
/// Device secrets at rest: <c>pbkdf2-sha256$iterations$salt$hash</c> (base64 salt and hash), PBKDF2-HMAC-SHA256
/// with a random 16-byte salt and a 32-byte output. Only the hash is stored; verification is constant-time.
/// </summary>
internal static class DeviceSecretHasher
{
    public const int DefaultIterations = 100_000;

    // A stored hash with more iterations than this is treated as damaged: verifying it would let a
    // tampered row pin a core per connect.
    public const int MaxIterations = 10_000_000;

    private const string Scheme = "pbkdf2-sha256";
    private const int SaltBytes = 16;
    private const int HashBytes = 32;

    public static string Hash(ReadOnlySpan<byte> secretUtf8, int iterations)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(iterations, MaxIterations);
        Span<byte> salt = stackalloc byte[SaltBytes];
        Span<byte> hash = stackalloc byte[HashBytes];
        RandomNumberGenerator.Fill(salt);
        Rfc2898DeriveBytes.Pbkdf2(secretUtf8, salt, hash, iterations, HashAlgorithmName.SHA256);
        return string.Create(CultureInfo.InvariantCulture, $"{Scheme}${iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}");
    }

    /// <summary>False for a wrong secret and for a stored value that is not in the expected format.</summary>
    public static bool Verify(ReadOnlySpan<byte> secretUtf8, string stored)
    {
        ArgumentNullException.ThrowIfNull(stored);
        var parts = stored.Split('$');
        if (parts.Length != 4 || parts[0] != Scheme
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
        RandomNumberGenerator.Fill(bytes);
        return Base64Url.EncodeToString(bytes);
    }
}
