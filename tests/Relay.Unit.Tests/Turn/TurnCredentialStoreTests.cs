using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

public sealed class TurnCredentialStoreTests
{
    // 2030-01-01; REST usernames below expire in 2100 (4102444800) unless a test says otherwise.
    private static readonly DateTimeOffset Start = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Fact]
    public void RestDerivation_MatchesAnIndependentComputation_AndCoturnsKey()
    {
        const string secret = "north";
        const string username = "4102444800:alice";
        const string realm = "example.org";

        // Independently: draft-uberti-behave-turn-rest-00 §2.2 and RFC 8489 §9.2.2, with the BCL only.
        var password = Convert.ToBase64String(HMACSHA1.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes(username)));
        var md5 = MD5.HashData(Encoding.UTF8.GetBytes($"{username}:{realm}:{password}"));
        var sha256 = SHA256.HashData(Encoding.UTF8.GetBytes($"{username}:{realm}:{password}"));

        // Pinned values; the MD5 key is what coturn prints for the same inputs:
        //   turnadmin -k -u 4102444800:alice -r example.org -p '58Tl4e2VjINId23vxEnD/7NNBaQ='
        //   0xaa23e700c7958ddf27915483cca10501
        Assert.Equal("58Tl4e2VjINId23vxEnD/7NNBaQ=", password);
        Assert.Equal("aa23e700c7958ddf27915483cca10501", Convert.ToHexStringLower(md5));
        Assert.Equal("8badab43184387751456fe925fffbfa6974c0ae4fab77077e13d567a65258db7", Convert.ToHexStringLower(sha256));

        var store = Store(realm, secrets: [secret]);
        Assert.Equal([md5], Candidates(store, username, StunPasswordAlgorithm.Md5));
        Assert.Equal([sha256], Candidates(store, username, StunPasswordAlgorithm.Sha256));
    }

    [Fact]
    public void StaticUser_KeysMatchStunCredentials_AndCoturnsKey()
    {
        var store = Store("example.org", users: ["alice:secret123", "carol:pa:ss"]);

        // turnadmin -k -u alice -r example.org -p secret123 => 0x6fb86950cc2417b45689c7a0eb523ce7
        Assert.Equal("6fb86950cc2417b45689c7a0eb523ce7", Convert.ToHexStringLower(Candidates(store, "alice", StunPasswordAlgorithm.Md5).Single()));
        Assert.Equal(Key(StunPasswordAlgorithm.Sha256, "alice", "example.org", "secret123"), Candidates(store, "alice", StunPasswordAlgorithm.Sha256).Single());

        // The password is everything after the first ':'.
        Assert.Equal(Key(StunPasswordAlgorithm.Md5, "carol", "example.org", "pa:ss"), Candidates(store, "carol", StunPasswordAlgorithm.Md5).Single());
        Assert.Equal(Key(StunPasswordAlgorithm.Sha256, "carol", "example.org", "pa:ss"), Candidates(store, "carol", StunPasswordAlgorithm.Sha256).Single());
    }

    [Fact]
    public void StaticUser_NonAsciiName_IsFoundByItsUtf8()
    {
        var store = Store("example.org", users: ["\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9:TheMatrIX"]);
        var key = Candidates(store, "\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9", StunPasswordAlgorithm.Md5).Single();
        Assert.Equal(Key(StunPasswordAlgorithm.Md5, "\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9", "example.org", "TheMatrIX"), key);
    }

    [Theory]
    [InlineData("")]
    [InlineData("bob")]
    [InlineData("alice ")]
    [InlineData("ALICE")]
    [InlineData("alicex")]
    [InlineData(":alice")]
    [InlineData("x4102444800:alice")]
    [InlineData("41024448OO:alice")]
    [InlineData("-4102444800:alice")]
    [InlineData("+4102444800:alice")]
    [InlineData("9999999999999999999:alice")] // 19 digits: beyond a long's safe parse, not a timestamp
    public void UnknownUser_HasNoCandidates(string username)
    {
        var store = Store("relay", users: ["alice:pw"], secrets: ["s1"]);
        Assert.Empty(Candidates(store, username, StunPasswordAlgorithm.Md5));
        Assert.Empty(Candidates(store, username, StunPasswordAlgorithm.Sha256));
    }

    [Fact]
    public void InvalidUtf8_IsNobody_AndDoesNotThrow()
    {
        var store = Store("relay", users: ["alice:pw"]);
        var keys = new byte[TurnCredentialStore.MaxCandidates * 32];
        Assert.Equal(0, store.GetCandidateKeys([0x61, 0x6C, 0xFF, 0xFE], StunPasswordAlgorithm.Md5, keys));
        Assert.Equal(0, store.GetCandidateKeys([0xC3], StunPasswordAlgorithm.Md5, keys));
        Assert.Equal(0, store.GetCandidateKeys(new byte[TurnCredentialStore.MaxUsernameBytes + 1], StunPasswordAlgorithm.Md5, keys));
    }

    [Fact]
    public void RestUsername_Expires()
    {
        var time = new FakeTimeProvider(Start);
        var store = new TurnCredentialStore(Options("relay", secrets: ["s1"]), time);
        var (username, password, ttl) = store.MintRestCredential("alice", TimeSpan.FromSeconds(60));
        Assert.Equal(60, ttl);
        Assert.Equal($"{Start.ToUnixTimeSeconds() + 60}:alice", username);
        var expected = Key(StunPasswordAlgorithm.Md5, username, "relay", password);

        Assert.Equal([expected], Candidates(store, username, StunPasswordAlgorithm.Md5));
        time.Advance(TimeSpan.FromSeconds(60)); // the expiry second itself still counts, as in coturn
        Assert.Equal([expected], Candidates(store, username, StunPasswordAlgorithm.Md5));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Empty(Candidates(store, username, StunPasswordAlgorithm.Md5));
    }

    [Fact]
    public void RestUsername_AllDigits_IsValid()
    {
        var store = Store("relay", secrets: ["s1"]);
        var password = RestPassword("s1", "4102444800");
        Assert.Equal([Key(StunPasswordAlgorithm.Md5, "4102444800", "relay", password)], Candidates(store, "4102444800", StunPasswordAlgorithm.Md5));

        var (username, _, _) = store.MintRestCredential(string.Empty, TimeSpan.FromHours(1));
        Assert.DoesNotContain(":", username, StringComparison.Ordinal);
        Assert.Single(Candidates(store, username, StunPasswordAlgorithm.Md5));
    }

    [Fact]
    public void RestUsername_UserPartMayContainColons()
    {
        var store = Store("relay", secrets: ["s1"]);
        const string username = "4102444800:tenant:alice";
        Assert.Equal([Key(StunPasswordAlgorithm.Sha256, username, "relay", RestPassword("s1", username))], Candidates(store, username, StunPasswordAlgorithm.Sha256));
    }

    [Fact]
    public void SecretRotation_EitherSecretWorks_AndTheFirstMints()
    {
        var time = new FakeTimeProvider(Start);
        var old = new TurnCredentialStore(Options("relay", secrets: ["old"]), time);
        var rotated = new TurnCredentialStore(Options("relay", secrets: ["new", "old"]), time);

        var fromOld = old.MintRestCredential("alice", TimeSpan.FromHours(1));
        var fromNew = rotated.MintRestCredential("bob", TimeSpan.FromHours(1));
        Assert.Equal(RestPassword("new", fromNew.Username), fromNew.Password);

        foreach (var (username, password) in new[] { (fromOld.Username, fromOld.Password), (fromNew.Username, fromNew.Password) })
        {
            var candidates = Candidates(rotated, username, StunPasswordAlgorithm.Md5);
            Assert.Equal(2, candidates.Count);
            Assert.Contains(Key(StunPasswordAlgorithm.Md5, username, "relay", password), candidates);
        }

        Assert.DoesNotContain(Key(StunPasswordAlgorithm.Md5, fromNew.Username, "relay", fromNew.Password), Candidates(old, fromNew.Username, StunPasswordAlgorithm.Md5));
    }

    [Fact]
    public void StaticAndRestUser_SharingAName_AreBothCandidates()
    {
        // A static user name cannot hold ':' (it splits user from password), so the shared name is a
        // colon-free all-digits one, which the draft also reads as a REST username.
        var store = Store("relay", users: ["4102444800:staticpw"], secrets: ["s1", "s2"]);
        var candidates = Candidates(store, "4102444800", StunPasswordAlgorithm.Sha256);
        Assert.Equal(3, candidates.Count);
        Assert.Equal(Key(StunPasswordAlgorithm.Sha256, "4102444800", "relay", "staticpw"), candidates[0]);
        Assert.Equal(Key(StunPasswordAlgorithm.Sha256, "4102444800", "relay", RestPassword("s1", "4102444800")), candidates[1]);
        Assert.Equal(Key(StunPasswordAlgorithm.Sha256, "4102444800", "relay", RestPassword("s2", "4102444800")), candidates[2]);
        Assert.True(candidates.Count <= TurnCredentialStore.MaxCandidates);

        // Expired as REST, still a static user.
        var later = new FakeTimeProvider(DateTimeOffset.FromUnixTimeSeconds(4102444801));
        var expired = new TurnCredentialStore(Options("relay", users: ["4102444800:staticpw"], secrets: ["s1", "s2"]), later);
        Assert.Single(Candidates(expired, "4102444800", StunPasswordAlgorithm.Sha256));
    }

    [Fact]
    public void StaticUsers_StillWork_WithoutSecrets_AndRestNeedsSecrets()
    {
        var store = Store("relay", users: ["alice:pw"]);
        Assert.False(store.HasSharedSecrets);
        Assert.Equal("relay", store.Realm);
        Assert.Empty(Candidates(store, "4102444800:alice", StunPasswordAlgorithm.Md5));
        Assert.Throws<InvalidOperationException>(() => store.MintRestCredential("alice", TimeSpan.FromHours(1)));
        Assert.True(Store("relay", secrets: ["s"]).HasSharedSecrets);
    }

    [Fact]
    public void Constructor_RefusesTooManySecrets_AndMalformedUsers()
    {
        Assert.Throws<ArgumentException>(() => Store("relay", secrets: ["1", "2", "3", "4", "5"]));
        var error = Assert.Throws<ArgumentException>(() => Store("relay", users: ["alice:pw", "bob"]));
        Assert.Contains("Relay:Turn:Users:1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void GetCandidateKeys_RefusesATooSmallBuffer()
    {
        var store = Store("relay", users: ["alice:pw"], secrets: ["s1", "s2"]);
        Assert.Throws<ArgumentException>(() => store.GetCandidateKeys("alice"u8, StunPasswordAlgorithm.Sha256, new byte[(3 * 32) - 1]));
        Assert.Equal(1, store.GetCandidateKeys("alice"u8, StunPasswordAlgorithm.Sha256, new byte[3 * 32]));
    }

    [Fact]
    public void OverlongRealm_UsesThePooledPath()
    {
        // Validation caps REALM below 128 characters; the store still copes with more.
        var realm = new string('r', 700);
        var username = "4102444800:" + new string('u', 490);
        var store = Store(realm, secrets: ["s1"]);
        Assert.Equal([Key(StunPasswordAlgorithm.Md5, username, realm, RestPassword("s1", username))], Candidates(store, username, StunPasswordAlgorithm.Md5));
    }

    [Fact]
    public void GetCandidateKeys_DoesNotAllocate()
    {
        var store = Store("relay", users: ["alice:pw", "4102444800:x"], secrets: ["s1", "s2"]);
        var keys = new byte[TurnCredentialStore.MaxCandidates * 32];
        byte[][] usernames = [Encoding.UTF8.GetBytes("alice"), Encoding.UTF8.GetBytes("4102444800"), Encoding.UTF8.GetBytes("4102444800:bob"), Encoding.UTF8.GetBytes("nobody")];
        var total = 0;
        for (var i = 0; i < 50; i++)
        {
            foreach (var username in usernames)
            {
                total += store.GetCandidateKeys(username, StunPasswordAlgorithm.Md5, keys) + store.GetCandidateKeys(username, StunPasswordAlgorithm.Sha256, keys);
            }
        }

        // The least of three rounds: a real allocation shows in every round, while a one-off runtime event on
        // this thread (a method tiering up on a loaded machine) shows in one at most.
        var allocated = long.MaxValue;
        for (var round = 0; round < 3; round++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < 500; i++)
            {
                foreach (var username in usernames)
                {
                    total += store.GetCandidateKeys(username, StunPasswordAlgorithm.Md5, keys) + store.GetCandidateKeys(username, StunPasswordAlgorithm.Sha256, keys);
                }
            }

            allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        Assert.Equal(0, allocated);
        Assert.Equal((50 + (3 * 500)) * 2 * (1 + 3 + 2 + 0), total);
    }

    private static string RestPassword(string secret, string username) =>
        Convert.ToBase64String(HMACSHA1.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes(username)));

    private static byte[] Key(StunPasswordAlgorithm algorithm, string username, string realm, string password)
    {
        var key = new byte[StunCredentials.KeyLength(algorithm)];
        StunCredentials.ComputeLongTermKey(algorithm, username, realm, password, key);
        return key;
    }

    private static List<byte[]> Candidates(TurnCredentialStore store, string username, StunPasswordAlgorithm algorithm)
    {
        var length = StunCredentials.KeyLength(algorithm);
        var keys = new byte[TurnCredentialStore.MaxCandidates * length];
        var count = store.GetCandidateKeys(Encoding.UTF8.GetBytes(username), algorithm, keys);
        return [.. Enumerable.Range(0, count).Select(i => keys.AsSpan(i * length, length).ToArray())];
    }

    private static TurnCredentialStore Store(string realm, string[]? users = null, string[]? secrets = null) =>
        new(Options(realm, users, secrets), new FakeTimeProvider(Start));

    internal static TurnOptions Options(string realm, string[]? users = null, string[]? secrets = null)
    {
        var options = new TurnOptions { Realm = realm };
        foreach (var user in users ?? [])
        {
            options.Users.Add(user);
        }

        foreach (var secret in secrets ?? [])
        {
            options.SharedSecrets.Add(secret);
        }

        return options;
    }
}
