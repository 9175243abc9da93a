using System.Buffers;
using System.Security.Cryptography;
using System.Text;

namespace Relay.Protocol.Stun;

/// <summary>Key derivation for the short-term and long-term credential mechanisms (RFC 8489 §9).</summary>
/// <remarks>Runs once per credential, not per packet, so the string work here is acceptable.</remarks>
public static class StunCredentials
{
    /// <summary>Key length for an algorithm: 16 for MD5, 32 for SHA-256.</summary>
    public static int KeyLength(StunPasswordAlgorithm algorithm) => algorithm == StunPasswordAlgorithm.Sha256 ? 32 : 16;

    /// <summary>
    /// Long-term key (RFC 8489 §9.2.2): MD5 or SHA-256 of
    /// <c>username ":" OpaqueString(realm) ":" OpaqueString(password)</c>.
    /// </summary>
    public static int ComputeLongTermKey(StunPasswordAlgorithm algorithm, string username, string realm, string password, Span<byte> destination)
    {
        var input = Encoding.UTF8.GetBytes($"{username}:{Prepare(realm)}:{Prepare(password)}");
#pragma warning disable CA5351 // RFC 8489 §9.2.2 mandates MD5 for the long-term key
        return algorithm == StunPasswordAlgorithm.Sha256
            ? SHA256.HashData(input, destination)
            : MD5.HashData(input, destination);
#pragma warning restore CA5351
    }

    /// <summary>Short-term key (RFC 8489 §9.1.1): the OpaqueString-prepared password.</summary>
    public static byte[] ComputeShortTermKey(string password) => Encoding.UTF8.GetBytes(Prepare(password));

    /// <summary>USERHASH (RFC 8489 §14.4): SHA-256 of <c>OpaqueString(username) ":" OpaqueString(realm)</c>.</summary>
    public static void ComputeUserhash(string username, string realm, Span<byte> destination)
    {
        var input = Encoding.UTF8.GetBytes($"{Prepare(username)}:{Prepare(realm)}");
        SHA256.HashData(input, destination);
    }

    /// <summary>
    /// The OpaqueString profile (RFC 8265 §4.2) as RFC 8489 applies it, reduced to what changes real
    /// inputs: characters "commonly mapped to nothing" are removed (SASLprep's table B.1, which RFC 5389
    /// clients still apply), non-ASCII spaces become U+0020, and the result is NFC-normalized.
    /// RFC 5769's SASLprep vector maps U+2168 by NFKC, so NFKC is used; it is a superset for our inputs.
    /// </summary>
    public static string Prepare(string value)
    {
        if (Ascii.IsValid(value))
        {
            return value;
        }

        var builder = new StringBuilder(value.Length);
        foreach (var c in value)
        {
            if (IsMappedToNothing(c))
            {
                continue;
            }

            builder.Append(char.IsWhiteSpace(c) && c > 0x7F ? ' ' : c);
        }

        return builder.ToString().Normalize(NormalizationForm.FormKC);
    }

    private static readonly SearchValues<char> MappedToNothing = SearchValues.Create(
        "\u00AD\u034F\u1806\u180B\u180C\u180D\u200B\u200C\u200D\u2060\uFE00\uFE01\uFE02\uFE03\uFE04\uFE05\uFE06\uFE07\uFE08\uFE09\uFE0A\uFE0B\uFE0C\uFE0D\uFE0E\uFE0F\uFEFF");

    private static bool IsMappedToNothing(char c) => MappedToNothing.Contains(c);
}
