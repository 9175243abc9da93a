using System.Security.Cryptography;
using Relay.DeviceClient.Peers;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// The sealed peer frame (PeerCipher) and its replay window, without sockets. The frame vectors were computed
/// by a second implementation (Python's <c>cryptography</c>, i.e. OpenSSL) from the format in docs/rendezvous.md,
/// so they pin the key derivation, the nonce and the header together.
/// </summary>
public sealed class PeerCipherTests
{
    private const string SessionId = "00112233445566778899aabbccddeeff";
    private static readonly byte[] SessionKey = [.. Enumerable.Range(0, 32).Select(i => (byte)i)];
    private static readonly byte[] PubAck = [0x40, 0x02, 0x12, 0x34];

    private static PeerCipher Controlling(bool chaCha = true) => new(SessionKey, SessionId, controlling: true, chaCha && ChaCha20Poly1305.IsSupported);

    private static PeerCipher Controlled(bool chaCha = true) => new(SessionKey, SessionId, controlling: false, chaCha && ChaCha20Poly1305.IsSupported);

    private static byte[] Seal(PeerCipher cipher, ReadOnlySpan<byte> packet)
    {
        var frame = new byte[PeerCipher.Overhead + packet.Length];
        packet.CopyTo(frame.AsSpan(PeerCipher.HeaderLength));
        Assert.True(cipher.TrySeal(frame));
        return frame;
    }

    private static PeerOpenResult Open(PeerCipher cipher, byte[] frame, out byte[] packet)
    {
        var buffer = new byte[Math.Max(0, frame.Length - PeerCipher.Overhead)];
        var result = cipher.TryOpen(frame, buffer, out var written, out _);
        packet = buffer[..written];
        return result;
    }

    [Fact]
    public void Hkdf_Rfc5869TestCase1()
    {
        // RFC 5869 Appendix A.1: our wrapper passes IKM, salt and info to .NET's HKDF in the right places.
        var ikm = Enumerable.Repeat((byte)0x0b, 22).ToArray();
        var salt = Convert.FromHexString("000102030405060708090a0b0c");
        var info = Convert.FromHexString("f0f1f2f3f4f5f6f7f8f9");
        var okm = new byte[42];
        PeerCipher.DeriveKey(ikm, salt, info, okm);
        Assert.Equal("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865", Convert.ToHexString(okm).ToLowerInvariant());
    }

    [ChaChaTheory]
    [InlineData(true, "510100000000000000076eb5995865b972122c23f5d495ac542f997afaa4")]
    [InlineData(false, "51020000000000000007be0784184a86d88108ab6fbda4f9bf9f44abc2ad")]
    public void Frame_MatchesTheVectorOfAnotherImplementation_AndOpensOnTheOtherSide(bool chaCha, string expected)
    {
        using var sender = Controlling(chaCha);
        using var receiver = Controlled();
        sender.NextCounter = 7;
        var frame = Seal(sender, PubAck);
        Assert.Equal(expected, Convert.ToHexString(frame).ToLowerInvariant());
        Assert.Equal(PeerOpenResult.Ok, Open(receiver, frame, out var packet));
        Assert.Equal(PubAck, packet);
        Assert.Equal(PeerCipher.Overhead + PubAck.Length, frame.Length);
    }

    [Fact]
    public void BothDirections_Open_ButAFrameReflectedToItsSenderOrUnderAnotherSessionDoesNot()
    {
        using var a = Controlling();
        using var b = Controlled();
        Assert.Equal(PeerOpenResult.Ok, Open(b, Seal(a, PubAck), out _));
        Assert.Equal(PeerOpenResult.Ok, Open(a, Seal(b, PubAck), out _));

        // Distinct keys per direction: A's own frame sent back to A does not open.
        Assert.Equal(PeerOpenResult.NotAuthentic, Open(a, Seal(a, PubAck), out _));

        // Another session id (the HKDF salt) with the same key: another key.
        using var other = new PeerCipher(SessionKey, "ffeeddccbbaa99887766554433221100", controlling: false, ChaCha20Poly1305.IsSupported);
        Assert.Equal(PeerOpenResult.NotAuthentic, Open(other, Seal(a, PubAck), out _));
    }

    [Fact]
    public void EveryAlteredByte_IsRejected_AndDoesNotMoveTheWindow()
    {
        using var a = Controlling();
        using var b = Controlled();
        var frame = Seal(a, PubAck);
        for (var i = 0; i < frame.Length; i++)
        {
            var altered = (byte[])frame.Clone();
            altered[i] ^= 0x01;
            Assert.NotEqual(PeerOpenResult.Ok, Open(b, altered, out var packet));
            Assert.Empty(packet);
        }

        Assert.Equal(PeerOpenResult.NotAuthentic, Open(b, frame[..^1], out _));
        Assert.Equal(PeerOpenResult.NotAuthentic, Open(b, frame[..(PeerCipher.Overhead - 1)], out _));

        // None of the forgeries marked counter 0 as seen: the genuine frame still opens, once.
        Assert.Equal(PeerOpenResult.Ok, Open(b, frame, out _));
        Assert.Equal(PeerOpenResult.Replayed, Open(b, frame, out _));
    }

    [ChaChaFact]
    public void AnAesOnlyPeer_CannotOpenChaCha_AndTheOtherSideFollowsItsSuite()
    {
        using var full = Controlling();
        using var aesOnly = Controlled(chaCha: false);
        Assert.Equal(PeerSuite.ChaCha20Poly1305, full.SendSuite);
        Assert.Equal(PeerSuite.Aes256Gcm, aesOnly.SendSuite);

        Assert.Equal(PeerOpenResult.UnsupportedSuite, Open(aesOnly, Seal(full, PubAck), out _));
        Assert.Equal(PeerOpenResult.Ok, Open(full, Seal(aesOnly, PubAck), out _));
        Assert.Equal(PeerSuite.Aes256Gcm, full.SendSuite);
        Assert.Equal(PeerOpenResult.Ok, Open(aesOnly, Seal(full, PubAck), out _));
    }

    [Fact]
    public void AnUnknownVersionOrSuite_IsRejected()
    {
        using var a = Controlling();
        using var b = Controlled();
        var frame = Seal(a, PubAck);
        frame[0] = 0x52;
        Assert.Equal(PeerOpenResult.NotAuthentic, Open(b, frame, out _));
        frame[0] = PeerCipher.Version1;
        frame[1] = 3;
        Assert.Equal(PeerOpenResult.NotAuthentic, Open(b, frame, out _));
    }

    [ChaChaFact]
    public void TheCounterSpace_EndsBeforeANonceCouldRepeat()
    {
        using var aes = Controlling(chaCha: false);
        aes.NextCounter = PeerCipher.MaxAesGcmFrames - 1;
        var last = new byte[PeerCipher.Overhead];
        Assert.True(aes.TrySeal(last));
        Assert.False(aes.TrySeal(new byte[PeerCipher.Overhead]));
        Assert.Equal(PeerCipher.MaxAesGcmFrames, aes.FramesSealed);

        using var chaCha = Controlling();
        chaCha.NextCounter = ulong.MaxValue - 2;
        Assert.True(chaCha.TrySeal(new byte[PeerCipher.Overhead]));
        Assert.False(chaCha.TrySeal(new byte[PeerCipher.Overhead]));
    }

    [Fact]
    public void ReplayWindow_AcceptsEachCounterOnce_InAnyOrderWithinTheWindow()
    {
        var window = new ReplayWindow();
        Assert.Equal(ReplayCheck.Fresh, window.Check(0));
        window.Accept(0);
        Assert.Equal(ReplayCheck.Replayed, window.Check(0));

        // Out of order: 5 before 1..4; each of them once.
        window.Accept(5);
        foreach (var n in new ulong[] { 3, 1, 4, 2 })
        {
            Assert.Equal(ReplayCheck.Fresh, window.Check(n));
            window.Accept(n);
        }

        foreach (var n in new ulong[] { 0, 1, 2, 3, 4, 5 })
        {
            Assert.Equal(ReplayCheck.Replayed, window.Check(n));
        }

        Assert.Equal(ReplayCheck.Fresh, window.Check(6));
        Assert.Equal(ReplayCheck.TooOld, window.Check(ulong.MaxValue));
    }

    [Fact]
    public void ReplayWindow_Edges()
    {
        var window = new ReplayWindow();
        const ulong top = 5000;
        window.Accept(top);

        // The window is the Size counters ending at the highest accepted: top - (Size - 1) is in, top - Size is out.
        Assert.Equal(ReplayCheck.Fresh, window.Check(top - (ReplayWindow.Size - 1)));
        Assert.Equal(ReplayCheck.TooOld, window.Check(top - ReplayWindow.Size));
        window.Accept(top - (ReplayWindow.Size - 1));
        Assert.Equal(ReplayCheck.Replayed, window.Check(top - (ReplayWindow.Size - 1)));

        // One step further and that counter falls out of the window.
        window.Accept(top + 1);
        Assert.Equal(ReplayCheck.TooOld, window.Check(top - (ReplayWindow.Size - 1)));

        // A jump far ahead forgets the ring: a counter whose bit shares a slot with an old one is fresh.
        const ulong far = top + (64 * 2 * ReplayWindow.Size) + 1;
        window.Accept(far);
        Assert.Equal(ReplayCheck.TooOld, window.Check(top + 1));
        Assert.Equal(ReplayCheck.Fresh, window.Check(far - 64));
        Assert.Equal(ReplayCheck.Fresh, window.Check(far - (ReplayWindow.Size - 1)));
        Assert.Equal(ReplayCheck.Replayed, window.Check(far));

        // A jump of just under one ring: the words in between are cleared, the ones in the window kept.
        var ring = new ReplayWindow();
        for (ulong n = 0; n < 2 * ReplayWindow.Size; n++)
        {
            ring.Accept(n);
        }

        ring.Accept((3 * ReplayWindow.Size) + 10);
        for (var n = (2 * (ulong)ReplayWindow.Size) + 11; n < (3 * (ulong)ReplayWindow.Size) + 10; n++)
        {
            Assert.Equal(ReplayCheck.Fresh, ring.Check(n));
        }
    }
}

/// <summary>A fact that needs ChaCha20-Poly1305 from the runtime (OpenSSL 1.1+, Windows 10 20H2+); skipped, saying so, elsewhere.</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class ChaChaFactAttribute : FactAttribute
{
    public ChaChaFactAttribute()
    {
        if (!ChaCha20Poly1305.IsSupported)
        {
            Skip = "ChaCha20-Poly1305 is not supported on this platform.";
        }
    }
}

/// <summary>A theory that needs ChaCha20-Poly1305 from the runtime.</summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class ChaChaTheoryAttribute : TheoryAttribute
{
    public ChaChaTheoryAttribute()
    {
        if (!ChaCha20Poly1305.IsSupported)
        {
            Skip = "ChaCha20-Poly1305 is not supported on this platform.";
        }
    }
}
