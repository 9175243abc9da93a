using System.Text;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

public sealed class TurnNonceServiceTests
{
    private static readonly DateTimeOffset Start = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly StunAddress Client = TurnPeerPolicyTests.Peer("192.0.2.10", 40000);
    private static readonly StunAddress Client6 = TurnPeerPolicyTests.Peer("2001:db8::10", 40000);

    [Fact]
    public void RoundTrip_IsValid()
    {
        var service = new TurnNonceService(new FakeTimeProvider(Start), TimeSpan.FromMinutes(10));
        Assert.Equal(NonceCheck.Valid, service.Validate(Write(service, Client), Client));
        Assert.Equal(NonceCheck.Valid, service.Validate(Write(service, Client6), Client6));
    }

    [Fact]
    public void Nonce_StartsWithTheRfc8489CookieAndPasswordAlgorithmsBit()
    {
        // RFC 8489 §9.2: "obMatJos2" + base64 of the 24 security feature bits; bit 0 (the most
        // significant) is "Password algorithms" (§18.1), as in RFC 8656's "obMatJos2gAAA..." examples.
        var expectedCookie = "obMatJos2" + Convert.ToBase64String([0x80, 0x00, 0x00]);
        Assert.Equal("obMatJos2gAAA", expectedCookie);
        Assert.Equal(expectedCookie, Encoding.ASCII.GetString(TurnNonceService.Cookie));

        var service = new TurnNonceService(TimeProvider.System, TimeSpan.FromMinutes(10));
        var nonce = Write(service, Client);
        Assert.StartsWith(expectedCookie, Encoding.ASCII.GetString(nonce), StringComparison.Ordinal);
        var features = Convert.FromBase64String(Encoding.ASCII.GetString(nonce, 9, 4));
        Assert.Equal(0x80, features[0] & 0x80);
    }

    [Fact]
    public void Nonce_IsAValidNonceValue()
    {
        // RFC 8489 §14.10: quoted-text / quoted-pair (RFC 3261), fewer than 128 characters.
        var service = new TurnNonceService(TimeProvider.System, TimeSpan.FromMinutes(10));
        for (var i = 0; i < 200; i++)
        {
            var nonce = Write(service, TurnPeerPolicyTests.Peer($"198.51.100.{i}", 1000 + i));
            Assert.Equal(TurnNonceService.MaxLength, nonce.Length);
            Assert.True(nonce.Length < 128);
            Assert.All(nonce, b => Assert.True(b is 0x21 or (>= 0x23 and <= 0x5B) or (>= 0x5D and <= 0x7E), $"byte 0x{b:x2} is not qdtext"));
        }
    }

    [Fact]
    public void OtherIP_IsInvalid_SameIPOtherPort_IsValid()
    {
        var service = new TurnNonceService(new FakeTimeProvider(Start), TimeSpan.FromMinutes(10));
        var nonce = Write(service, Client);
        Assert.Equal(NonceCheck.Invalid, service.Validate(nonce, TurnPeerPolicyTests.Peer("192.0.2.11", 40000)));
        Assert.Equal(NonceCheck.Invalid, service.Validate(nonce, TurnPeerPolicyTests.Peer("::ffff:192.0.2.10", 40000)));
        Assert.Equal(NonceCheck.Invalid, service.Validate(nonce, Client6));
        Assert.Equal(NonceCheck.Valid, service.Validate(nonce, Client.WithPort(40001)));
        Assert.Equal(NonceCheck.Valid, service.Validate(nonce, Client.WithPort(1)));
    }

    [Fact]
    public void AnotherProcess_IsInvalid()
    {
        var time = new FakeTimeProvider(Start);
        var nonce = Write(new TurnNonceService(time, TimeSpan.FromMinutes(10)), Client);
        Assert.Equal(NonceCheck.Invalid, new TurnNonceService(time, TimeSpan.FromMinutes(10)).Validate(nonce, Client));
    }

    [Fact]
    public void Expiry_IsStale_OnlyForTheRightClient()
    {
        var time = new FakeTimeProvider(Start);
        var service = new TurnNonceService(time, TimeSpan.FromSeconds(600));
        var nonce = Write(service, Client);

        time.Advance(TimeSpan.FromSeconds(599));
        Assert.Equal(NonceCheck.Valid, service.Validate(nonce, Client));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(NonceCheck.Stale, service.Validate(nonce, Client));
        Assert.Equal(NonceCheck.Invalid, service.Validate(nonce, TurnPeerPolicyTests.Peer("192.0.2.11", 40000)));
        time.Advance(TimeSpan.FromDays(365));
        Assert.Equal(NonceCheck.Stale, service.Validate(nonce, Client));

        // A fresh one works again.
        Assert.Equal(NonceCheck.Valid, service.Validate(Write(service, Client), Client));
    }

    [Fact]
    public void SubSecondLifetime_IsRefused_AndFractionsRoundUp()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TurnNonceService(TimeProvider.System, TimeSpan.FromMilliseconds(999)));

        var time = new FakeTimeProvider(Start);
        var service = new TurnNonceService(time, TimeSpan.FromSeconds(1.5));
        var nonce = Write(service, Client);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(NonceCheck.Valid, service.Validate(nonce, Client));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(NonceCheck.Stale, service.Validate(nonce, Client));
    }

    [Fact]
    public void EveryBitFlip_EveryTruncation_AndEveryExtension_IsNeverValid()
    {
        var service = new TurnNonceService(new FakeTimeProvider(Start), TimeSpan.FromMinutes(10));
        var nonce = Write(service, Client);
        for (var i = 0; i < nonce.Length; i++)
        {
            for (var bit = 0; bit < 8; bit++)
            {
                var mutated = (byte[])nonce.Clone();
                mutated[i] ^= (byte)(1 << bit);
                Assert.Equal(NonceCheck.Invalid, service.Validate(mutated, Client));
            }

            // Whitespace is skipped by base64 decoders; it must not make a different string equivalent.
            var spaced = (byte[])nonce.Clone();
            spaced[i] = (byte)' ';
            Assert.Equal(NonceCheck.Invalid, service.Validate(spaced, Client));
        }

        for (var length = 0; length < nonce.Length; length++)
        {
            Assert.Equal(NonceCheck.Invalid, service.Validate(nonce.AsSpan(0, length), Client));
        }

        Assert.Equal(NonceCheck.Invalid, service.Validate([.. nonce, (byte)'A'], Client));
        Assert.Equal(NonceCheck.Invalid, service.Validate([.. nonce, (byte)'='], Client));
    }

    [Fact]
    public void StandardBase64Spellings_OfTheSamePayload_AreInvalid()
    {
        // One nonce, one spelling: '+' and '/' (standard base64) must not stand in for '-' and '_'.
        var service = new TurnNonceService(new FakeTimeProvider(Start), TimeSpan.FromMinutes(10));
        var client = Client;
        var substitutions = 0;
        for (var port = 1; substitutions < 20 && port < 10_000; port++)
        {
            client = TurnPeerPolicyTests.Peer($"192.0.2.{port % 250}", port);
            var nonce = Write(service, client);
            for (var i = 13; i < nonce.Length; i++)
            {
                if (nonce[i] is (byte)'-' or (byte)'_')
                {
                    var respelled = (byte[])nonce.Clone();
                    respelled[i] = nonce[i] == '-' ? (byte)'+' : (byte)'/';
                    Assert.Equal(NonceCheck.Valid, service.Validate(nonce, client));
                    Assert.Equal(NonceCheck.Invalid, service.Validate(respelled, client));
                    substitutions++;
                }
            }
        }

        Assert.True(substitutions >= 20);
    }

    [Fact]
    public void RandomInput_IsNeverValid_AndNeverThrows()
    {
        var service = new TurnNonceService(new FakeTimeProvider(Start), TimeSpan.FromMinutes(10));
        var random = new Random(8489);
        var cookie = TurnNonceService.Cookie.ToArray();
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \t\r\n";
        for (var i = 0; i < 20_000; i++)
        {
            byte[] candidate;
            switch (i % 3)
            {
                case 0: // arbitrary bytes, arbitrary length
                    candidate = new byte[random.Next(0, 200)];
                    random.NextBytes(candidate);
                    break;
                case 1: // right cookie and length, random base64-ish payload
                    candidate = [.. cookie, .. Enumerable.Range(0, TurnNonceService.MaxLength - cookie.Length).Select(_ => (byte)alphabet[random.Next(alphabet.Length)])];
                    break;
                default: // right shape, random bytes after the cookie
                    candidate = new byte[TurnNonceService.MaxLength];
                    random.NextBytes(candidate);
                    cookie.CopyTo(candidate, 0);
                    break;
            }

            Assert.Equal(NonceCheck.Invalid, service.Validate(candidate, Client));
        }
    }

    [Fact]
    public void Write_RefusesAShortBuffer()
    {
        var service = new TurnNonceService(TimeProvider.System, TimeSpan.FromMinutes(10));
        Assert.Throws<ArgumentException>(() => service.Write(Client, new byte[TurnNonceService.MaxLength - 1]));
    }

    [Fact]
    public void WriteAndValidate_DoNotAllocate()
    {
        var service = new TurnNonceService(new FakeTimeProvider(Start), TimeSpan.FromMinutes(10));
        var buffer = new byte[TurnNonceService.MaxLength];
        var garbage = new byte[TurnNonceService.MaxLength];
        TurnNonceService.Cookie.CopyTo(garbage);
        var valid = 0;
        for (var i = 0; i < 100; i++)
        {
            valid += Cycle(service, buffer, garbage);
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 2000; i++)
        {
            valid += Cycle(service, buffer, garbage);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(2100 * 2, valid);

        static int Cycle(TurnNonceService service, byte[] buffer, byte[] garbage)
        {
            var length = service.Write(Client, buffer);
            var result = service.Validate(buffer.AsSpan(0, length), Client) == NonceCheck.Valid ? 1 : 0;
            result += service.Write(Client6, buffer) == TurnNonceService.MaxLength && service.Validate(buffer, Client6) == NonceCheck.Valid ? 1 : 0;
            return result - (service.Validate(garbage, Client) == NonceCheck.Valid ? 100 : 0);
        }
    }

    private static byte[] Write(TurnNonceService service, in StunAddress client)
    {
        var buffer = new byte[TurnNonceService.MaxLength];
        var length = service.Write(client, buffer);
        Assert.Equal(TurnNonceService.MaxLength, length);
        return buffer;
    }
}
