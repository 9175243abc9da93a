using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Relay.DeviceClient.Peers;

/// <summary>The AEAD that seals a peer frame; the frame's second byte names it.</summary>
internal enum PeerSuite : byte
{
    /// <summary>ChaCha20-Poly1305 (RFC 8439 §2.8): preferred wherever the runtime has it.</summary>
    ChaCha20Poly1305 = 1,

    /// <summary>AES-256-GCM (NIST SP 800-38D): where ChaCha20-Poly1305 is not supported.</summary>
    Aes256Gcm = 2,
}

/// <summary>Why <see cref="PeerCipher.TryOpen"/> refused a frame.</summary>
internal enum PeerOpenResult
{
    Ok,

    /// <summary>Too short, an unknown version, a forged or altered frame, or the wrong key.</summary>
    NotAuthentic,

    /// <summary>Sealed with a suite this runtime cannot open (the sender should follow ours, see <see cref="PeerCipher"/>).</summary>
    UnsupportedSuite,

    /// <summary>A counter already accepted: a replay (RFC 4303 §3.4.3).</summary>
    Replayed,

    /// <summary>A counter older than the replay window: dropped, as a replay could be.</summary>
    TooOld,
}

/// <summary>
/// Seals and opens peer frames (docs/rendezvous.md "The channel"). Every PUBLISH and PUBACK between two
/// peers travels as:
/// <code>
///  0        1        2                               10                       n-16        n
/// +--------+--------+-------------------------------+------------------------+-----------+
/// |  0x51  | suite  |  counter (64-bit big-endian)  | ciphertext (MQTT pkt)  | tag (16)  |
/// +--------+--------+-------------------------------+------------------------+-----------+
/// </code>
/// 0x51 is version 1, in RFC 7983's unassigned 80-127 first-byte range, so the session socket still tells
/// frames from STUN (0-3); a later version takes 0x52. The 10-byte header is the AEAD's associated data.
/// The nonce is 4 zero bytes and the counter (RFC 8439 §2.8's 96-bit nonce as constant ‖ counter, as TLS 1.3
/// and WireGuard do): each direction has its own key, so a counter never repeats under one key.
/// </summary>
/// <remarks>
/// Keys (RFC 5869 HKDF-SHA256): IKM = the 32-byte session key from the rendezvous, salt = the session id
/// (UTF-8), info = <c>"relay peer v1 {suite} {direction}"</c>; one key per suite and per direction
/// (controlling→controlled, controlled→controlling), so the directions never share a key/nonce space and a
/// frame reflected back to its sender does not open. Suites: a sender seals with ChaCha20-Poly1305 when the
/// runtime supports it, else AES-256-GCM; a receiver opens either. Agreement needs no signalling: once a
/// side opens an authentic AES-256-GCM frame it seals with AES-256-GCM too (sticky; the peer cannot open
/// ChaCha20-Poly1305), and a side that gets a frame in a suite it lacks answers with an authentic frame of
/// its own (<see cref="PeerChannel"/>), so the other side switches before its next retransmission.
/// Not thread-safe: the channel holds one lock for sealing and one for opening.
/// </remarks>
internal sealed class PeerCipher : IDisposable
{
    public const byte Version1 = 0x51;
    public const int HeaderLength = 10;
    public const int TagLength = 16;

    /// <summary>Bytes a frame adds to the MQTT packet it carries.</summary>
    public const int Overhead = HeaderLength + TagLength;

    private const int KeyLength = 32;

    /// <summary>
    /// ChaCha20-Poly1305's safety margin outlasts a 64-bit counter (RFC 8446 §5.5); AES-GCM's does not: RFC 8446
    /// §5.5 allows 2^24.5 full-size (16 KiB) records per key, and our frames are no larger, so 2^24 frames
    /// per direction. The channel then refuses to send (reconnect for fresh keys) rather than wear the key out.
    /// </summary>
    internal const ulong MaxAesGcmFrames = 1UL << 24;

    private const ulong MaxChaChaFrames = ulong.MaxValue - 1;

    private readonly ChaCha20Poly1305? _sealChaCha;
    private readonly AesGcm? _sealAes;
    private readonly ChaCha20Poly1305? _openChaCha;
    private readonly AesGcm? _openAes;
    private readonly ReplayWindow _window = new();
    private ulong _sendCounter;

    /// <param name="sessionKey">The rendezvous session key.</param>
    /// <param name="sessionId">The rendezvous session id (the HKDF salt).</param>
    /// <param name="controlling">This side's role: it picks which derived key seals and which opens.</param>
    /// <param name="chaChaSupported">Whether this runtime has ChaCha20-Poly1305 (tests pass false to play an AES-only peer).</param>
    public PeerCipher(ReadOnlySpan<byte> sessionKey, string sessionId, bool controlling, bool chaChaSupported)
    {
        var salt = Encoding.UTF8.GetBytes(sessionId);
        var send = controlling ? "controlling->controlled" : "controlled->controlling";
        var receive = controlling ? "controlled->controlling" : "controlling->controlled";
        Span<byte> key = stackalloc byte[KeyLength];
        try
        {
            if (chaChaSupported)
            {
                DeriveKey(sessionKey, salt, Info("chacha20-poly1305", send), key);
                _sealChaCha = new ChaCha20Poly1305(key);
                DeriveKey(sessionKey, salt, Info("chacha20-poly1305", receive), key);
                _openChaCha = new ChaCha20Poly1305(key);
            }

            if (AesGcm.IsSupported)
            {
                DeriveKey(sessionKey, salt, Info("aes-256-gcm", send), key);
                _sealAes = new AesGcm(key, TagLength);
                DeriveKey(sessionKey, salt, Info("aes-256-gcm", receive), key);
                _openAes = new AesGcm(key, TagLength);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }

        SendSuite = _sealChaCha is not null ? PeerSuite.ChaCha20Poly1305 : _sealAes is not null ? PeerSuite.Aes256Gcm
            : throw new PlatformNotSupportedException("Neither ChaCha20-Poly1305 nor AES-GCM is supported on this platform: the peer channel cannot be encrypted.");
    }

    /// <summary>The suite this side seals with now.</summary>
    public PeerSuite SendSuite { get; private set; }

    /// <summary>Frames sealed so far (the next counter).</summary>
    public ulong FramesSealed => _sendCounter;

    /// <summary>Test hook: the counter of the next sealed frame (to test the end of the counter space).</summary>
    internal ulong NextCounter
    {
        set => _sendCounter = value;
    }

    /// <summary>RFC 5869 HKDF-SHA256 (extract then expand) into <paramref name="output"/>.</summary>
    internal static void DeriveKey(ReadOnlySpan<byte> ikm, ReadOnlySpan<byte> salt, ReadOnlySpan<byte> info, Span<byte> output) =>
        HKDF.DeriveKey(HashAlgorithmName.SHA256, ikm, output, salt, info);

    /// <summary>
    /// Seals the packet at <c>datagram[HeaderLength..^TagLength]</c> in place and writes the header and tag.
    /// False when this direction's counter space is used up (the channel must end: a nonce is never reused).
    /// </summary>
    public bool TrySeal(Span<byte> datagram)
    {
        var limit = SendSuite == PeerSuite.ChaCha20Poly1305 ? MaxChaChaFrames : MaxAesGcmFrames;
        if (_sendCounter >= limit)
        {
            return false;
        }

        var counter = _sendCounter++;
        var header = datagram[..HeaderLength];
        header[0] = Version1;
        header[1] = (byte)SendSuite;
        BinaryPrimitives.WriteUInt64BigEndian(header[2..], counter);
        Span<byte> nonce = stackalloc byte[12];
        Nonce(counter, nonce);
        var text = datagram[HeaderLength..^TagLength];
        var tag = datagram[^TagLength..];
        if (SendSuite == PeerSuite.ChaCha20Poly1305)
        {
            _sealChaCha!.Encrypt(nonce, text, text, tag, header);
        }
        else
        {
            _sealAes!.Encrypt(nonce, text, text, tag, header);
        }

        return true;
    }

    /// <summary>
    /// Opens a frame into <paramref name="plaintext"/> (at least <c>datagram.Length - Overhead</c> bytes).
    /// The replay window is checked before (cheap refusal) and advanced only after the tag verified
    /// (RFC 4303 §3.4.3: a forged frame must not move the window).
    /// </summary>
    public PeerOpenResult TryOpen(ReadOnlySpan<byte> datagram, Span<byte> plaintext, out int written, out PeerSuite suite)
    {
        written = 0;
        suite = default;
        if (datagram.Length < Overhead || datagram[0] != Version1)
        {
            return PeerOpenResult.NotAuthentic;
        }

        suite = (PeerSuite)datagram[1];
        if (suite is not (PeerSuite.ChaCha20Poly1305 or PeerSuite.Aes256Gcm))
        {
            return PeerOpenResult.NotAuthentic;
        }

        if ((suite == PeerSuite.ChaCha20Poly1305 ? _openChaCha is null : _openAes is null))
        {
            return PeerOpenResult.UnsupportedSuite;
        }

        var counter = BinaryPrimitives.ReadUInt64BigEndian(datagram[2..HeaderLength]);
        switch (_window.Check(counter))
        {
            case ReplayCheck.Replayed:
                return PeerOpenResult.Replayed;
            case ReplayCheck.TooOld:
                return PeerOpenResult.TooOld;
        }

        var length = datagram.Length - Overhead;
        Span<byte> nonce = stackalloc byte[12];
        Nonce(counter, nonce);
        try
        {
            if (suite == PeerSuite.ChaCha20Poly1305)
            {
                _openChaCha!.Decrypt(nonce, datagram[HeaderLength..^TagLength], datagram[^TagLength..], plaintext[..length], datagram[..HeaderLength]);
            }
            else
            {
                _openAes!.Decrypt(nonce, datagram[HeaderLength..^TagLength], datagram[^TagLength..], plaintext[..length], datagram[..HeaderLength]);
            }
        }
        catch (CryptographicException)
        {
            // The runtime zeroed the plaintext; a forged frame teaches the window nothing.
            return PeerOpenResult.NotAuthentic;
        }

        _window.Accept(counter);

        // The peer seals with AES-256-GCM: it cannot open ChaCha20-Poly1305, so neither side uses it from now on.
        if (suite == PeerSuite.Aes256Gcm && SendSuite != PeerSuite.Aes256Gcm && _sealAes is not null)
        {
            SendSuite = PeerSuite.Aes256Gcm;
        }

        written = length;
        return PeerOpenResult.Ok;
    }

    public void Dispose()
    {
        _sealChaCha?.Dispose();
        _openChaCha?.Dispose();
        _sealAes?.Dispose();
        _openAes?.Dispose();
    }

    private static void Nonce(ulong counter, Span<byte> nonce)
    {
        nonce[..4].Clear();
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], counter);
    }

    private static byte[] Info(string suite, string direction) => Encoding.ASCII.GetBytes($"relay peer v1 {suite} {direction}");
}

/// <summary>The verdict of <see cref="ReplayWindow.Check"/>.</summary>
internal enum ReplayCheck
{
    Fresh,
    Replayed,
    TooOld,
}

/// <summary>
/// An anti-replay sliding window over 64-bit counters (RFC 4303 §3.4.3, with RFC 6479's ring of words so
/// advancing is O(1) amortised and allocation-free): a counter is accepted once, in any order, while it is
/// within <see cref="Size"/> of the highest accepted; older ones are refused. Not thread-safe.
/// </summary>
internal sealed class ReplayWindow
{
    /// <summary>How far behind the highest accepted counter a frame may arrive (reordering tolerated).</summary>
    public const int Size = 1024;

    // A ring of 2 × Size bits: the words cleared as the top advances are always outside the window.
    private const int Words = 2 * Size / 64;

    private readonly ulong[] _bits = new ulong[Words];

    // The highest accepted counter + 1; 0 = nothing accepted yet (so counter 0 is a valid first frame).
    private ulong _top;

    public ReplayCheck Check(ulong counter)
    {
        if (counter == ulong.MaxValue)
        {
            return ReplayCheck.TooOld; // never sent: the sender stops before it (PeerCipher)
        }

        var n = counter + 1;
        if (n > _top)
        {
            return ReplayCheck.Fresh;
        }

        if (_top - n >= Size)
        {
            return ReplayCheck.TooOld;
        }

        return (_bits[(int)((n >> 6) % Words)] & (1UL << (int)(n & 63))) != 0 ? ReplayCheck.Replayed : ReplayCheck.Fresh;
    }

    /// <summary>Marks a counter that <see cref="Check"/> found fresh and whose frame was authentic.</summary>
    public void Accept(ulong counter)
    {
        var n = counter + 1;
        if (n > _top)
        {
            // Clear the words between the old top's and the new top's (at most the whole ring).
            var current = _top >> 6;
            var steps = Math.Min((n >> 6) - current, Words);
            for (ulong i = 1; i <= steps; i++)
            {
                _bits[(int)((current + i) % Words)] = 0;
            }

            _top = n;
        }

        _bits[(int)((n >> 6) % Words)] |= 1UL << (int)(n & 63);
    }
}
