using System.Buffers;
using System.Buffers.Binary;
using System.Buffers.Text;
using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>What a NONCE from a request turned out to be.</summary>
internal enum NonceCheck : byte
{
    /// <summary>Ours, for this client's IP address, not expired.</summary>
    Valid,

    /// <summary>Ours and for this client, but expired: answer 438 Stale Nonce (RFC 8489 §9.2.4).</summary>
    Stale,

    /// <summary>Not ours, another client's, or not a nonce at all.</summary>
    Invalid,
}

/// <summary>
/// Stateless NONCEs for the long-term credential mechanism (RFC 8489 §9.2). An unauthenticated
/// request costs the server one HMAC and no memory: the nonce carries its own expiry and is bound by
/// a MAC to the client's IP address, which is what RFC 8489 §9.2 suggests ("a nonce ... that is a
/// hash of the client's IP address and a timestamp, with a server secret").
/// </summary>
/// <remarks>
/// Layout, 45 ASCII bytes, every one a legal quoted-string character (RFC 8489 §14.10):
/// <code>
/// "obMatJos2"  base64(security features, 3 bytes)  base64url(expiry: 8 bytes, big-endian unix seconds || MAC: 16 bytes)
///   9 chars            4 chars ("gAAA")                                32 chars
/// MAC = HMAC-SHA256(process key, expiry || client IP address bytes)[0..16]
/// </code>
/// The key is random per process: after a restart every nonce is Invalid, which costs clients one
/// 401 round trip and no more (their allocations died with the process anyway). The port is left out
/// of the MAC so that a client whose NAT rebinds its port, or which opens several flows, keeps its nonce.
/// </remarks>
internal sealed class TurnNonceService
{
    /// <summary>Bytes <see cref="Write"/> produces; every valid nonce has exactly this length.</summary>
    public const int MaxLength = CookieLength + OpaqueLength;

    private const int CookieLength = 13;
    private const int MacLength = 16;
    private const int PayloadLength = sizeof(long) + MacLength;
    private const int OpaqueLength = PayloadLength / 3 * 4; // 24 bytes: base64 with no padding

    private readonly TimeProvider _time;
    private readonly long _lifetimeSeconds;
    private readonly byte[] _key = RandomNumberGenerator.GetBytes(32);

    /// <summary>Creates the service with a fresh random key.</summary>
    public TurnNonceService(TimeProvider time, TimeSpan lifetime)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(lifetime, TimeSpan.FromSeconds(1));
        _time = time;
        _lifetimeSeconds = (long)Math.Ceiling(lifetime.TotalSeconds);
    }

    /// <summary>
    /// The nonce cookie (RFC 8489 §9.2): "obMatJos2" then the 24 STUN Security Feature bits (RFC 8489
    /// §18.1) in base64. Bit 0, "Password algorithms", is the most significant bit, so the features
    /// are 0x800000 = "gAAA", which is also what RFC 8656's examples carry ("obMatJos2gAAA..."). It
    /// tells RFC 8489 clients that the 401 offers PASSWORD-ALGORITHMS, and lets them detect a
    /// bid-down that strips it (RFC 8489 §9.2.5). Username anonymity (bit 1, USERHASH) is not offered.
    /// </summary>
    internal static ReadOnlySpan<byte> Cookie => "obMatJos2gAAA"u8;

    /// <summary>Writes a fresh nonce for <paramref name="client"/>'s IP address; returns <see cref="MaxLength"/>.</summary>
    public int Write(in StunAddress client, Span<byte> destination)
    {
        if (destination.Length < MaxLength)
        {
            ThrowDestinationTooSmall();
        }

        Span<byte> payload = stackalloc byte[PayloadLength];
        var expiry = _time.GetUtcNow().ToUnixTimeSeconds() + _lifetimeSeconds;
        BinaryPrimitives.WriteInt64BigEndian(payload, expiry);
        ComputeMac(payload[..sizeof(long)], client, payload[sizeof(long)..]);

        Cookie.CopyTo(destination);
        Base64Url.EncodeToUtf8(payload, destination[CookieLength..], out _, out var written);
        return CookieLength + written;
    }

    /// <summary>Checks a NONCE attribute's value from <paramref name="client"/>. Never throws on wire input.</summary>
    public NonceCheck Validate(ReadOnlySpan<byte> nonce, in StunAddress client)
    {
        // A fixed length makes every shorter or longer value Invalid before any decoding.
        if (nonce.Length != MaxLength || !nonce.StartsWith(Cookie))
        {
            return NonceCheck.Invalid;
        }

        // Base64Url skips whitespace while decoding, so demand every input char and every output byte:
        // "ab cd..." must not decode to the same payload as "abcd...".
        Span<byte> payload = stackalloc byte[PayloadLength];
        var status = Base64Url.DecodeFromUtf8(nonce[CookieLength..], payload, out var consumed, out var written);
        if (status != OperationStatus.Done || consumed != OpaqueLength || written != PayloadLength)
        {
            return NonceCheck.Invalid;
        }

        Span<byte> expected = stackalloc byte[MacLength];
        ComputeMac(payload[..sizeof(long)], client, expected);
        if (!CryptographicOperations.FixedTimeEquals(expected, payload[sizeof(long)..]))
        {
            return NonceCheck.Invalid;
        }

        // Only an authentic nonce can be stale: RFC 8489 §9.2.4 asks for 438 so that the client
        // retries with the fresh NONCE in the answer, rather than re-prompting for credentials.
        var expiry = BinaryPrimitives.ReadInt64BigEndian(payload);
        return _time.GetUtcNow().ToUnixTimeSeconds() >= expiry ? NonceCheck.Stale : NonceCheck.Valid;
    }

    private void ComputeMac(ReadOnlySpan<byte> expiry, in StunAddress client, Span<byte> destination)
    {
        Span<byte> input = stackalloc byte[sizeof(long) + 16];
        expiry.CopyTo(input);
        var addressLength = client.WriteAddressBytes(input[sizeof(long)..]);
        Span<byte> mac = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(_key, input[..(sizeof(long) + addressLength)], mac);
        mac[..MacLength].CopyTo(destination);
    }

    [DoesNotReturn]
    private static void ThrowDestinationTooSmall() =>
        throw new ArgumentException($"A nonce needs {MaxLength} bytes.", "destination");
}
