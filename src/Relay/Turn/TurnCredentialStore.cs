using System.Buffers;
using System.Buffers.Text;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Unicode;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>
/// Long-term credentials for TURN (RFC 8489 §9.2): static users from <see cref="TurnOptions.Users"/>,
/// and time-limited "REST" credentials (draft-uberti-behave-turn-rest-00) derived from
/// <see cref="TurnOptions.SharedSecrets"/>, the scheme coturn calls use-auth-secret.
/// </summary>
/// <remarks>
/// A username can match a static user and a REST credential at once, and during secret rotation
/// several secrets are live, so the store hands back every candidate key and the caller tries each
/// against MESSAGE-INTEGRITY(-SHA256). There are at most <see cref="MaxCandidates"/>.
/// </remarks>
internal sealed class TurnCredentialStore
{
    /// <summary>Shared secrets that may be active at once; two cover a rotation, four leave slack.</summary>
    public const int MaxSharedSecrets = 4;

    /// <summary>Most keys <see cref="GetCandidateKeys"/> writes: one static user plus one per shared secret.</summary>
    public const int MaxCandidates = 1 + MaxSharedSecrets;

    /// <summary>
    /// Longest USERNAME looked up (RFC 5389's bound, which the readers accept); longer ones are unknown
    /// without further work. Also the bound of the stack buffers below.
    /// </summary>
    public const int MaxUsernameBytes = StunConstants.MaxUsernameBytes;

    // The REST password is base64 of a 20-byte HMAC-SHA1: 28 ASCII characters, for which OpaqueString
    // is the identity, so the key input can be built from bytes without strings.
    private const int RestPasswordLength = 28;
    private const int MaxExpiryDigits = 18; // fits a long with room to spare; unix seconds need 10 until 2286

    private readonly Dictionary<string, StaticUser> _users;
    private readonly Dictionary<string, StaticUser>.AlternateLookup<ReadOnlySpan<char>> _usersBySpan;
    private readonly byte[][] _secrets;
    private readonly byte[] _realmUtf8;
    private readonly TimeProvider _time;

    /// <summary>
    /// Precomputes every static user's MD5 and SHA-256 keys. <paramref name="generatedSecret"/> (rendezvous:
    /// an in-memory secret made at startup) is used only when no shared secret is configured, so devices
    /// can get working TURN credentials over MQTT without any setup; it dies with the process, and with it
    /// every credential minted from it.
    /// </summary>
    public TurnCredentialStore(TurnOptions options, TimeProvider time, byte[]? generatedSecret = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        if (options.SharedSecrets.Count > MaxSharedSecrets)
        {
            throw new ArgumentException($"{TurnOptions.SectionName}:SharedSecrets: at most {MaxSharedSecrets} secrets", nameof(options));
        }

        _time = time;
        Realm = options.Realm;
        _realmUtf8 = Encoding.UTF8.GetBytes(StunCredentials.Prepare(options.Realm));
        _secrets = [.. options.SharedSecrets.Select(Encoding.UTF8.GetBytes)];
        HasSharedSecrets = _secrets.Length > 0;
        if (_secrets.Length == 0 && generatedSecret is { Length: > 0 })
        {
            _secrets = [generatedSecret];
        }

        _users = new Dictionary<string, StaticUser>(StringComparer.Ordinal);
        for (var i = 0; i < options.Users.Count; i++)
        {
            if (!TurnOptionsValidator.TrySplitUser(options.Users[i], out var user, out var password))
            {
                throw new ArgumentException($"{TurnOptions.SectionName}:Users:{i}: expected user:password", nameof(options));
            }

            // The client sends USERNAME already through OpaqueString (RFC 8489 §14.3), so compare and
            // hash the prepared form. A duplicate is a validation error; the first entry wins here.
            var username = StunCredentials.Prepare(user);
            if (_users.ContainsKey(username))
            {
                continue;
            }

            var md5 = new byte[StunCredentials.KeyLength(StunPasswordAlgorithm.Md5)];
            var sha256 = new byte[StunCredentials.KeyLength(StunPasswordAlgorithm.Sha256)];
            StunCredentials.ComputeLongTermKey(StunPasswordAlgorithm.Md5, username, options.Realm, password, md5);
            StunCredentials.ComputeLongTermKey(StunPasswordAlgorithm.Sha256, username, options.Realm, password, sha256);
            _users.Add(username, new StaticUser(md5, sha256));
        }

        _usersBySpan = _users.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>REALM for 401 answers and key derivation.</summary>
    public string Realm { get; }

    /// <summary>True when <c>Relay:Turn:SharedSecrets</c> configures secrets (a generated one does not count).</summary>
    public bool HasSharedSecrets { get; }

    /// <summary>True when REST credentials can be checked and minted: a configured or a generated secret.</summary>
    public bool CanMintRestCredentials => _secrets.Length > 0;

    /// <summary>
    /// Writes the long-term keys (RFC 8489 §9.2.2) this USERNAME might use, back to back, each
    /// <see cref="StunCredentials.KeyLength"/> bytes: the static user's, then one per shared secret
    /// when the username is an unexpired REST username. Returns how many; 0 for an unknown user or an
    /// expired REST username. Allocates nothing. <paramref name="keys"/> needs room for one key per
    /// shared secret plus one; <see cref="MaxCandidates"/> keys always suffice.
    /// </summary>
    public int GetCandidateKeys(ReadOnlySpan<byte> usernameUtf8, StunPasswordAlgorithm algorithm, Span<byte> keys)
    {
        var keyLength = StunCredentials.KeyLength(algorithm);
        if (keys.Length < keyLength * (1 + _secrets.Length))
        {
            ThrowKeysTooSmall();
        }

        if (usernameUtf8.IsEmpty || usernameUtf8.Length > MaxUsernameBytes)
        {
            return 0;
        }

        var count = 0;
        if (_users.Count > 0 && TryGetStaticUser(usernameUtf8, out var user))
        {
            (algorithm == StunPasswordAlgorithm.Sha256 ? user.Sha256 : user.Md5).CopyTo(keys);
            count++;
        }

        if (_secrets.Length > 0 && TryParseRestExpiry(usernameUtf8, out var expiry) && !IsExpired(expiry))
        {
            foreach (var secret in _secrets)
            {
                WriteRestKey(secret, usernameUtf8, algorithm, keys.Slice(count * keyLength, keyLength));
                count++;
            }
        }

        return count;
    }

    /// <summary>
    /// Mints a REST credential with the first shared secret (draft-uberti-behave-turn-rest-00 §2.2):
    /// username <c>expiry ":" user</c> (just the expiry when <paramref name="user"/> is empty),
    /// password <c>base64(HMAC-SHA1(secret, username))</c>.
    /// </summary>
    public (string Username, string Password, int TtlSeconds) MintRestCredential(string user, TimeSpan ttl)
    {
        ArgumentNullException.ThrowIfNull(user);
        ArgumentOutOfRangeException.ThrowIfLessThan(ttl, TimeSpan.FromSeconds(1));
        if (_secrets.Length == 0)
        {
            throw new InvalidOperationException($"{TurnOptions.SectionName}:SharedSecrets is empty: no REST credentials to mint.");
        }

        var ttlSeconds = (int)Math.Min(int.MaxValue, Math.Ceiling(ttl.TotalSeconds));
        var expiry = (_time.GetUtcNow().ToUnixTimeSeconds() + ttlSeconds).ToString(CultureInfo.InvariantCulture);
        var username = user.Length == 0 ? expiry : $"{expiry}:{user}";
#pragma warning disable CA5350 // draft-uberti-behave-turn-rest-00 §2.2 mandates HMAC-SHA1 for the REST password
        return (username, Convert.ToBase64String(HMACSHA1.HashData(_secrets[0], Encoding.UTF8.GetBytes(username))), ttlSeconds);
#pragma warning restore CA5350
    }

    /// <summary>
    /// The REST username's expiry (draft-uberti-behave-turn-rest-00 §2.2): the digits before the first
    /// ':', or the whole username when it is all digits. Anything else is not a REST username.
    /// </summary>
    internal static bool TryParseRestExpiry(ReadOnlySpan<byte> usernameUtf8, out long expiry)
    {
        expiry = 0;
        var colon = usernameUtf8.IndexOf((byte)':');
        var digits = colon < 0 ? usernameUtf8 : usernameUtf8[..colon];
        if (digits.IsEmpty || digits.Length > MaxExpiryDigits)
        {
            return false;
        }

        foreach (var b in digits)
        {
            var digit = b - (byte)'0';
            if ((uint)digit > 9)
            {
                return false;
            }

            expiry = (expiry * 10) + digit;
        }

        return true;
    }

    // coturn accepts a REST username through its expiry second (it rejects only when expiry < now);
    // we do the same, so credentials minted by either server live equally long on both.
    private bool IsExpired(long expiry) => expiry < _time.GetUtcNow().ToUnixTimeSeconds();

    private bool TryGetStaticUser(ReadOnlySpan<byte> usernameUtf8, [MaybeNullWhen(false)] out StaticUser user)
    {
        // Invalid UTF-8 is nobody: refusing it here means no replacement character can ever match.
        Span<char> chars = stackalloc char[MaxUsernameBytes];
        if (Utf8.ToUtf16(usernameUtf8, chars, out _, out var written, replaceInvalidSequences: false) != OperationStatus.Done)
        {
            user = null;
            return false;
        }

        return _usersBySpan.TryGetValue(chars[..written], out user);
    }

    /// <summary>
    /// key = H(username ":" OpaqueString(realm) ":" OpaqueString(password)) (RFC 8489 §9.2.2), with
    /// password = base64(HMAC-SHA1(secret, username)) (draft-uberti-behave-turn-rest-00 §2.2). The
    /// username is hashed as the client sent it, already OpaqueString-prepared (RFC 8489 §14.3).
    /// </summary>
    private void WriteRestKey(byte[] secret, ReadOnlySpan<byte> usernameUtf8, StunPasswordAlgorithm algorithm, Span<byte> destination)
    {
        Span<byte> mac = stackalloc byte[HMACSHA1.HashSizeInBytes];
#pragma warning disable CA5350 // draft-uberti-behave-turn-rest-00 §2.2 mandates HMAC-SHA1 for the REST password
        HMACSHA1.HashData(secret, usernameUtf8, mac);
#pragma warning restore CA5350

        var length = usernameUtf8.Length + 1 + _realmUtf8.Length + 1 + RestPasswordLength;
        byte[]? rented = null;
        var input = length <= 1024 ? stackalloc byte[1024] : (rented = ArrayPool<byte>.Shared.Rent(length));
        try
        {
            usernameUtf8.CopyTo(input);
            var position = usernameUtf8.Length;
            input[position++] = (byte)':';
            _realmUtf8.CopyTo(input[position..]);
            position += _realmUtf8.Length;
            input[position++] = (byte)':';
            Base64.EncodeToUtf8(mac, input[position..], out _, out var written);
            position += written;

#pragma warning disable CA5351 // RFC 8489 §9.2.2 mandates MD5 for the long-term key
            _ = algorithm == StunPasswordAlgorithm.Sha256
                ? SHA256.HashData(input[..position], destination)
                : MD5.HashData(input[..position], destination);
#pragma warning restore CA5351
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    [DoesNotReturn]
    private static void ThrowKeysTooSmall() =>
        throw new ArgumentException("keys has no room for one key per shared secret plus one.", "keys");

    private sealed record StaticUser(byte[] Md5, byte[] Sha256);
}
