using System.Text;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Stun;

namespace Relay.Server.Tests.DeviceClientNat;

/// <summary>The client side of the long-term credential mechanism (RFC 8489 §9.2) on hand-made challenges, without a server.</summary>
public sealed class StunLongTermCredentialsTests
{
    private const string Realm = "relay.test";
    private const string FeatureNonce = "obMatJos2gAAAnonce"; // 'g' = 32: the "Password algorithms" bit is set
    private static readonly TurnCredentials Alice = new("alice", "s3cret");
    private static readonly StunReaderLimits Limits = StunReaderLimits.Default;

    [Fact]
    public void BeforeAChallenge_RequestsGoUnsigned()
    {
        var credentials = new StunLongTermCredentials(Alice);
        var request = Signed(credentials);

        Assert.Null(credentials.Key);
        Assert.False(request.HasUsername);
        Assert.False(request.HasIntegrity);
    }

    [Fact]
    public void Rfc8489_9_2_5_WithoutTheFeatureBit_AnOfferedSha256_IsIgnored_AndMd5Signs()
    {
        var credentials = new StunLongTermCredentials(Alice);
        Learn(credentials, Challenge("plain-nonce", StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5));

        Assert.Equal(StunPasswordAlgorithm.Md5, credentials.Algorithm);
        var request = Signed(credentials);
        Assert.Equal("alice", request.Username);
        Assert.Equal(Realm, request.Realm);
        Assert.Equal("plain-nonce", request.Nonce);
        Assert.False(request.HasPasswordAlgorithms);
        Assert.True(request.VerifiesWith(Key(StunPasswordAlgorithm.Md5), sha256: false));
    }

    [Fact]
    public void Rfc8489_9_2_5_WithTheFeatureBit_TheFirstSupportedAlgorithmSigns_AndTheListIsEchoed()
    {
        var credentials = new StunLongTermCredentials(Alice);
        Learn(credentials, Challenge(FeatureNonce, StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5));

        Assert.Equal(StunPasswordAlgorithm.Sha256, credentials.Algorithm);
        var request = Signed(credentials);
        Assert.True(request.HasPasswordAlgorithms);
        Assert.True(request.VerifiesWith(Key(StunPasswordAlgorithm.Sha256), sha256: true));
        Assert.False(request.VerifiesWith(Key(StunPasswordAlgorithm.Md5), sha256: false));
    }

    [Fact]
    public void Rfc8489_9_2_5_AStaleNonce_IsReplaced_AndTheKeyKept()
    {
        var credentials = new StunLongTermCredentials(Alice);
        Learn(credentials, Challenge("first-nonce"));
        var key = credentials.Key;

        credentials.LearnStaleNonce(Parse(Error(438, "second-nonce")));

        Assert.Same(key, credentials.Key);
        Assert.Equal("second-nonce", Signed(credentials).Nonce);
    }

    [Fact]
    public void AChallengeThatCannotBeAnswered_Throws_AndLeavesTheStateAlone()
    {
        var credentials = new StunLongTermCredentials(Alice with { Realm = "expected.test" });

        Assert.Throws<TurnProtocolException>(() => Learn(credentials, Challenge("nonce")));
        var noNonce = Assert.Throws<TurnErrorException>(() => credentials.LearnChallenge(Parse(Error(401, nonce: null))));
        Assert.Equal(401, noNonce.Code);
        Assert.Throws<TurnErrorException>(() => credentials.LearnStaleNonce(Parse(Error(438, nonce: null))));
        Assert.Null(credentials.Key);
    }

    private static byte[] Key(StunPasswordAlgorithm algorithm)
    {
        var key = new byte[StunCredentials.KeyLength(algorithm)];
        StunCredentials.ComputeLongTermKey(algorithm, Alice.Username, Realm, Alice.Password, key);
        return key;
    }

    private static byte[] Challenge(string nonce, params StunPasswordAlgorithm[] offered) => Error(401, nonce, offered);

    private static byte[] Error(int code, string? nonce, params StunPasswordAlgorithm[] offered)
    {
        var buffer = new byte[512];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Allocate, StunClass.ErrorResponse), StunTransactionId.NewRandom());
        writer.WriteErrorCode(code, "error"u8);
        writer.WriteAttribute(StunAttributeType.Realm, Encoding.UTF8.GetBytes(Realm));
        if (nonce is not null)
        {
            writer.WriteAttribute(StunAttributeType.Nonce, Encoding.UTF8.GetBytes(nonce));
        }

        if (offered.Length > 0)
        {
            writer.WritePasswordAlgorithms(offered);
        }

        return writer.Written.ToArray();
    }

    private static void Learn(StunLongTermCredentials credentials, byte[] challenge) => credentials.LearnChallenge(Parse(challenge));

    private static SignedRequest Signed(StunLongTermCredentials credentials)
    {
        var buffer = new byte[512];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Refresh, StunClass.Request), StunTransactionId.NewRandom());
        credentials.Sign(ref writer);
        return new SignedRequest(writer.Written.ToArray());
    }

    private static StunMessage Parse(byte[] bytes)
    {
        Assert.Equal(System.Buffers.OperationStatus.Done, StunMessageReader.TryParse(bytes, Limits, out var message, out _));
        return message;
    }

    private sealed class SignedRequest(byte[] bytes)
    {
        public bool HasUsername => Parse(bytes).HasAttribute(StunAttributeType.Username);

        public bool HasIntegrity
        {
            get
            {
                var message = Parse(bytes);
                return message.HasMessageIntegrity || message.HasMessageIntegritySha256;
            }
        }

        public bool HasPasswordAlgorithms
        {
            get
            {
                var message = Parse(bytes);
                return message.HasAttribute(StunAttributeType.PasswordAlgorithms) && message.HasAttribute(StunAttributeType.PasswordAlgorithm);
            }
        }

        public string Username => Text(StunAttributeType.Username);

        public string Realm => Text(StunAttributeType.Realm);

        public string Nonce => Text(StunAttributeType.Nonce);

        public bool VerifiesWith(byte[] key, bool sha256)
        {
            var message = Parse(bytes);
            return sha256
                ? message.HasMessageIntegritySha256 && message.VerifyMessageIntegritySha256(key)
                : message.HasMessageIntegrity && message.VerifyMessageIntegrity(key);
        }

        private string Text(StunAttributeType type)
        {
            Assert.True(Parse(bytes).TryGetAttribute(type, out var value));
            return Encoding.UTF8.GetString(value);
        }
    }
}
