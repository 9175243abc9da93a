using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Relay.Protocol.Tests;

/// <summary>
/// Independent oracles for the values the codec computes, written differently from the codec on
/// purpose (bitwise CRC, a fresh copy of the message for the HMAC) so that a shared mistake is unlikely.
/// </summary>
internal static class ReferenceCrypto
{
    /// <summary>CRC-32 (ISO-HDLC / V.42, reflected 0xEDB88320), bit by bit.</summary>
    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        var crc = 0xFFFFFFFFu;
        foreach (var b in data)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++)
            {
                crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
            }
        }

        return ~crc;
    }

    /// <summary>RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XOR 0x5354554E.</summary>
    public static uint Fingerprint(ReadOnlySpan<byte> messageBeforeFingerprint) => Crc32(messageBeforeFingerprint) ^ 0x5354554E;

    /// <summary>
    /// RFC 8489 §14.5/§14.6: HMAC over the message up to the integrity attribute, with the header's
    /// length field set as if the integrity attribute (of <paramref name="macLength"/> bytes) ended the message.
    /// </summary>
    public static byte[] IntegrityMac(ReadOnlySpan<byte> messageBeforeIntegrity, int macLength, byte[] key, bool sha256)
    {
        var copy = messageBeforeIntegrity.ToArray();
        BinaryPrimitives.WriteUInt16BigEndian(copy.AsSpan(2), (ushort)(copy.Length - 20 + 4 + macLength));
        return sha256 ? HMACSHA256.HashData(key, copy) : HMACSHA1.HashData(key, copy);
    }
}
