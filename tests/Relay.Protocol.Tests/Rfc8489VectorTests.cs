using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Relay.Protocol.Stun;

namespace Relay.Protocol.Tests;

/// <summary>
/// RFC 8489 Appendix B.1, "Sample Request with Long-Term Authentication with MESSAGE-INTEGRITY-SHA256
/// and USERHASH", as corrected by Verified erratum 6268 (https://www.rfc-editor.org/errata/eid6268).
/// </summary>
/// <remarks>
/// The vector as printed in the RFC is broken three ways (see <see cref="PublishedVector_IsBroken_AsErratum6268Says"/>):
/// its length field (0x9c) does not match its attributes (0x88 bytes), it omits the PASSWORD-ALGORITHM
/// attribute its own text calls for, and its MESSAGE-INTEGRITY-SHA256 does not verify. The erratum's
/// message adds PASSWORD-ALGORITHM (SHA-256, no parameters), sets the length to 0x90 and carries a
/// recomputed HMAC; that corrected message is what the codec must accept.
/// Note also (reported erratum 8746, unresolved): B.1 says "OpaqueString" but its password only becomes
/// "TheMatrIX" under the compatibility (NFKC) mapping of RFC 5769's SASLprep, which is what
/// <see cref="StunCredentials.Prepare"/> applies.
/// </remarks>
public sealed class Rfc8489VectorTests
{
    private static StunMessage Parse(byte[] bytes)
    {
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(bytes, StunReaderLimits.Default, out var message, out var error));
        Assert.Equal(StunParseError.None, error);
        return message;
    }

    [Fact]
    public void B1_Userhash_IsSha256OfUsernameAndRealm()
    {
        // RFC 8489 §14.4: userhash = SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
        var userhash = new byte[32];
        StunCredentials.ComputeUserhash(TestVectors.LongTermUsername, TestVectors.Realm, userhash);
        Assert.Equal(SHA256.HashData(Encoding.UTF8.GetBytes("\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:example.org")), userhash);
        Assert.Equal(TestVectors.Rfc8489B1.AsSpan(24, 32).ToArray(), userhash);
    }

    [Fact]
    public void B1_LongTermKey_IsSha256OfPreparedCredentials()
    {
        // RFC 8489 §9.2.2 with PASSWORD-ALGORITHM SHA-256: key = SHA-256(username ":" realm ":" password).
        var expected = SHA256.HashData(Encoding.UTF8.GetBytes("\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:example.org:TheMatrIX"));
        Assert.Equal(expected, TestVectors.Rfc8489LongTermKey());
        Assert.Equal(32, StunCredentials.KeyLength(StunPasswordAlgorithm.Sha256));
    }

    [Fact]
    public void B1_Corrected_ParsesWithExpectedStructure()
    {
        var message = Parse(TestVectors.Rfc8489B1);
        Assert.Equal(StunClass.Request, message.Header.Class);
        Assert.Equal((ushort)StunMethod.Binding, message.Header.Method);
        Assert.Equal(0x90, message.Header.Length);
        Assert.Equal(TestVectors.TxId(TestVectors.LongTermTransactionId), message.Header.TransactionId);
        Assert.Equal(5, message.AttributeCount);
        Assert.False(message.HasMessageIntegrity);
        Assert.True(message.HasMessageIntegritySha256);
        Assert.False(message.HasFingerprint);

        var types = new List<ushort>();
        foreach (var attribute in message)
        {
            types.Add(attribute.Type);
        }

        Assert.Equal(new ushort[] { 0x001E, 0x0015, 0x0014, 0x001D, 0x001C }, types.ToArray());

        Assert.True(message.TryGetAttribute(StunAttributeType.Userhash, out var userhash));
        Assert.Equal(32, userhash.Length);
        Assert.True(message.TryGetAttribute(StunAttributeType.Nonce, out var nonce));
        Assert.Equal(TestVectors.Rfc8489Nonce, Encoding.UTF8.GetString(nonce));
        Assert.Equal(41, nonce.Length); // padded with three zero bytes
        Assert.True(message.TryGetAttribute(StunAttributeType.Realm, out var realm));
        Assert.Equal(TestVectors.Realm, Encoding.UTF8.GetString(realm));
        Assert.True(message.TryGetAttribute(StunAttributeType.PasswordAlgorithm, out var algorithmValue));
        Assert.True(StunAttributeReader.TryReadPasswordAlgorithm(algorithmValue, out var algorithm, out var parameters));
        Assert.Equal(StunPasswordAlgorithm.Sha256, algorithm);
        Assert.True(parameters.IsEmpty);
        Assert.True(message.TryGetAttribute(StunAttributeType.MessageIntegritySha256, out var mac));
        Assert.Equal(32, mac.Length);
        Assert.False(message.HasAttribute(StunAttributeType.Username));
    }

    [Fact]
    public void B1_Corrected_MessageIntegritySha256_VerifiesWithTheSha256LongTermKey()
    {
        var message = Parse(TestVectors.Rfc8489B1);
        var key = TestVectors.Rfc8489LongTermKey();
        Assert.True(message.VerifyMessageIntegritySha256(key));

        // An independent HMAC over the message up to the attribute agrees.
        Assert.Equal(
            TestVectors.Rfc8489B1.AsSpan(128 + 4, 32).ToArray(),
            ReferenceCrypto.IntegrityMac(TestVectors.Rfc8489B1.AsSpan(0, 128), 32, key, sha256: true));

        Assert.False(message.VerifyMessageIntegritySha256(TestVectors.Rfc5769LongTermKey())); // MD5 key
        Assert.False(message.VerifyMessageIntegritySha256(SHA256.HashData("\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:example.org:TheMatrIx"u8)));
        Assert.False(message.VerifyMessageIntegrity(key)); // no SHA-1 MESSAGE-INTEGRITY present
    }

    [Fact]
    public void B1_Corrected_ReEncodes_ByteIdentical()
    {
        var key = TestVectors.Rfc8489LongTermKey();
        Span<byte> userhash = stackalloc byte[32];
        StunCredentials.ComputeUserhash(TestVectors.LongTermUsername, TestVectors.Realm, userhash);

        Span<byte> buffer = stackalloc byte[512];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), TestVectors.TxId(TestVectors.LongTermTransactionId));
        writer.WriteAttribute(StunAttributeType.Userhash, userhash);
        writer.WriteAttribute(StunAttributeType.Nonce, Encoding.UTF8.GetBytes(TestVectors.Rfc8489Nonce));
        writer.WriteAttribute(StunAttributeType.Realm, Encoding.UTF8.GetBytes(TestVectors.Realm));
        writer.WritePasswordAlgorithm(StunPasswordAlgorithm.Sha256);
        writer.WriteMessageIntegritySha256(key);
        Assert.Equal(TestVectors.Rfc8489B1, writer.Written.ToArray());
    }

    [Fact]
    public void PublishedVector_IsBroken_AsErratum6268Says()
    {
        // As printed, the header claims 0x9c bytes of attributes but 0x88 follow: a strict prefix.
        var published = TestVectors.Rfc8489B1Published;
        Assert.Equal(20 + 0x88, published.Length);
        Assert.Equal(OperationStatus.NeedMoreData, StunMessageReader.TryParse(published, StunReaderLimits.Default, out _, out var error));
        Assert.Equal(StunParseError.None, error);

        // Even with the length repaired, its MESSAGE-INTEGRITY-SHA256 matches neither key.
        var repaired = (byte[])published.Clone();
        BinaryPrimitives.WriteUInt16BigEndian(repaired.AsSpan(2), 0x88);
        var message = Parse(repaired);
        Assert.False(message.VerifyMessageIntegritySha256(TestVectors.Rfc8489LongTermKey()));
        Assert.False(message.VerifyMessageIntegritySha256(TestVectors.Rfc5769LongTermKey()));
    }
}
