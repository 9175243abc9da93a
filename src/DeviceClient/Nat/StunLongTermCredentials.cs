using System.Text;
using Relay.Protocol.Stun;

namespace Relay.DeviceClient.Nat;

/// <summary>
/// The client side of STUN's long-term credential mechanism (RFC 8489 §9.2): it learns REALM, NONCE and the
/// password algorithm from a 401 challenge (§9.2.4) and a fresh NONCE from a 438 (§9.2.5), and signs requests
/// with the key derived from them. Not thread-safe: its owner runs one request at a time.
/// </summary>
internal sealed class StunLongTermCredentials(TurnCredentials credentials)
{
    // RFC 8489 §9.2: "obMatJos2" starts a nonce that carries security feature bits (base64 of 24 bits).
    private static readonly byte[] NonceCookie = "obMatJos2"u8.ToArray();

    private byte[]? _realm;
    private byte[]? _nonce;
    private byte[]? _passwordAlgorithms;

    /// <summary>The long-term key; null until a challenge was answered.</summary>
    public byte[]? Key { get; private set; }

    /// <summary>MD5 (MESSAGE-INTEGRITY) unless the server offered SHA-256 first (MESSAGE-INTEGRITY-SHA256).</summary>
    public StunPasswordAlgorithm Algorithm { get; private set; } = StunPasswordAlgorithm.Md5;

    /// <summary>
    /// RFC 8489 §9.2.3: USERNAME, REALM, NONCE and the integrity attribute computed with the long-term key;
    /// §9.2.5: PASSWORD-ALGORITHMS echoed verbatim and PASSWORD-ALGORITHM when the server offered a choice.
    /// Writes nothing before the first challenge. FINGERPRINT, if any, follows.
    /// </summary>
    public void Sign(ref StunMessageWriter writer)
    {
        if (Key is null)
        {
            return;
        }

        writer.WriteAttribute(StunAttributeType.Username, Encoding.UTF8.GetBytes(credentials.Username));
        writer.WriteAttribute(StunAttributeType.Realm, _realm);
        writer.WriteAttribute(StunAttributeType.Nonce, _nonce);
        if (_passwordAlgorithms is not null)
        {
            writer.WriteAttribute(StunAttributeType.PasswordAlgorithms, _passwordAlgorithms);
            writer.WritePasswordAlgorithm(Algorithm);
        }

        if (Algorithm == StunPasswordAlgorithm.Sha256)
        {
            writer.WriteMessageIntegritySha256(Key);
        }
        else
        {
            writer.WriteMessageIntegrity(Key);
        }
    }

    /// <summary>RFC 8489 §9.2.4: the 401 names the REALM and a NONCE, and may offer PASSWORD-ALGORITHMS.</summary>
    public void LearnChallenge(in StunMessage message)
    {
        if (!message.TryGetAttribute(StunAttributeType.Realm, out var realm) || !message.TryGetAttribute(StunAttributeType.Nonce, out var nonce))
        {
            throw new TurnErrorException(401, "Unauthorized, without REALM and NONCE to answer");
        }

        var realmText = Encoding.UTF8.GetString(realm);
        if (credentials.Realm is { } expected && !string.Equals(expected, realmText, StringComparison.Ordinal))
        {
            throw new TurnProtocolException($"The server's realm '{realmText}' is not the expected '{expected}'.");
        }

        // RFC 8489 §9.2.5: with the "Password algorithms" feature bit in the nonce cookie, pick the first
        // listed algorithm we support; without it the attribute is ignored (a bid-down attempt) and MD5 is used.
        var algorithm = StunPasswordAlgorithm.Md5;
        byte[]? offered = null;
        if (HasPasswordAlgorithmsFeature(nonce) && message.TryGetAttribute(StunAttributeType.PasswordAlgorithms, out var list))
        {
            var offset = 0;
            var found = false;
            while (!found && StunAttributeReader.TryReadPasswordAlgorithmEntry(list, ref offset, out var candidate, out _))
            {
                found = candidate is StunPasswordAlgorithm.Md5 or StunPasswordAlgorithm.Sha256;
                algorithm = candidate;
                if (offset >= list.Length)
                {
                    break;
                }
            }

            if (!found)
            {
                throw new TurnProtocolException("The server offers no password algorithm this client supports (MD5, SHA-256).");
            }

            offered = list.ToArray();
        }

        var key = new byte[StunCredentials.KeyLength(algorithm)];
        StunCredentials.ComputeLongTermKey(algorithm, credentials.Username, realmText, credentials.Password, key);
        _realm = realm.ToArray();
        _nonce = nonce.ToArray();
        Key = key;
        Algorithm = algorithm;
        _passwordAlgorithms = offered;
    }

    /// <summary>RFC 8489 §9.2.5: a 438 carries a fresh NONCE (and REALM) to retry with.</summary>
    public void LearnStaleNonce(in StunMessage message)
    {
        if (!message.TryGetAttribute(StunAttributeType.Nonce, out var nonce))
        {
            throw new TurnErrorException(438, "Stale Nonce, without a NONCE to retry with");
        }

        _nonce = nonce.ToArray();
    }

    private static bool HasPasswordAlgorithmsFeature(ReadOnlySpan<byte> nonce)
    {
        // "obMatJos2" then four base64 characters for 24 feature bits; bit 0 (the most significant) is
        // "Password algorithms", i.e. the first character's 6-bit value is 32 or more ('g'-'z', '0'-'9', '+', '/').
        if (nonce.Length < NonceCookie.Length + 4 || !nonce.StartsWith(NonceCookie))
        {
            return false;
        }

        var c = nonce[NonceCookie.Length];
        return c is (>= (byte)'g' and <= (byte)'z') or (>= (byte)'0' and <= (byte)'9') or (byte)'+' or (byte)'/';
    }
}
