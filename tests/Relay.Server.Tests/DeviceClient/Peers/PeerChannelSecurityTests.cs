using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Mqtt;
using Relay.Protocol.Rendezvous;
using Relay.Protocol.Stun;
using Relay.Server.Tests.DeviceClientNat;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// The sealed channel (PeerCipher) and the checks under attack, over real sockets on 127.0.0.1 with our TURN
/// server in-process. A third host is played by a UDP tap that the direct path runs through (it sees, drops,
/// replays and injects datagrams with the path's own source address, as an on-path attacker or a host spoofing
/// the peer's address would), or by a socket of its own. Every wait is on an event or a counter, bounded.
/// </summary>
public sealed class PeerChannelSecurityTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private static PeerOptions Options(Action<PeerOptions>? configure = null)
    {
        var options = new PeerOptions
        {
            LocalAddress = IPAddress.Loopback,
            AllowLoopbackCandidates = true,
            BirthdayProbing = false,
            InitialRetransmitTimeout = TimeSpan.FromMilliseconds(100),
            ServerRetransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 5 },
        };
        configure?.Invoke(options);
        return options;
    }

    private static ReadOnlyMemory<byte> Text(string text) => Encoding.UTF8.GetBytes(text);

    private sealed class Pair(PeerSession a, PeerSession b) : IAsyncDisposable
    {
        public PeerSession A { get; } = a;

        public PeerSession B { get; } = b;

        public async ValueTask DisposeAsync()
        {
            await A.DisposeAsync();
            await B.DisposeAsync();
        }
    }

    /// <summary>A introduces itself to B with the candidates the test chooses (the server's part), one session key.</summary>
    private static async Task<Pair> IntroduceAsync(
        TurnServerUnderTest server,
        PeerOptions a,
        PeerOptions b,
        Func<IReadOnlyList<RendezvousCandidate>, IReadOnlyList<RendezvousCandidate>>? candidatesOfA = null,
        Func<IReadOnlyList<RendezvousCandidate>, IReadOnlyList<RendezvousCandidate>>? candidatesOfB = null)
    {
        var servers = new PeerServers(server.Endpoint, server.Endpoint, server.Endpoint, new TurnCredentials(TurnServerUnderTest.User, TurnServerUnderTest.Password));
        var localA = await PeerCandidates.GatherAsync(a, servers, CancellationToken.None);
        var localB = await PeerCandidates.GatherAsync(b, servers, CancellationToken.None);
        var key = RandomNumberGenerator.GetBytes(32);
        var sessionId = Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();
        var sessionA = new PeerSession(new PeerSessionSetup(sessionId, "b", key, true, candidatesOfB?.Invoke(localB.Candidates) ?? localB.Candidates, null, null), localA, a, TimeProvider.System);
        var sessionB = new PeerSession(new PeerSessionSetup(sessionId, "a", key, false, candidatesOfA?.Invoke(localA.Candidates) ?? localA.Candidates, null, null), localB, b, TimeProvider.System);
        await Task.WhenAll(sessionA.StartAsync(CancellationToken.None), sessionB.StartAsync(CancellationToken.None)).WaitAsync(Bound);
        return new Pair(sessionA, sessionB);
    }

    /// <summary>Nothing was delivered before it: the next message B receives is a fresh one from A.</summary>
    private static async Task AssertNothingDeliveredAsync(Pair pair, string marker)
    {
        await pair.A.Channel.SendAsync(Text(marker)).WaitAsync(Bound);
        Assert.Equal(marker, await pair.B.Channel.ReceiveTextAsync(Bound));
    }

    [Fact]
    public async Task OnTheDirectPath_TheTapSeesOnlyCiphertext_AndItsReplaysForgeriesAndReflectionsAreDroppedAndCounted()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var tap = new UdpTap();

        // A knows B only as the tap (and B's relay); B knows A only by its relay, so it learns the tap's far side
        // as A's peer-reflexive address. The direct path is A ↔ tap ↔ B, and the tap is its B-side source.
        await using var pair = await IntroduceAsync(
            server,
            Options(),
            Options(),
            candidatesOfA: c => [.. c.Where(x => x.Type == "relay")],
            candidatesOfB: c => [new RendezvousCandidate("host", "127.0.0.1", tap.ForA.Port, PeerCandidates.Priority("host", 0)), .. c.Where(x => x.Type == "relay")]);
        tap.Start(pair.B.LocalEndPoint);
        await Task.WhenAll(pair.A.Channel.WaitForPathAsync(PeerPath.Direct, Bound), pair.B.Channel.WaitForPathAsync(PeerPath.Direct, Bound));
        Assert.Equal(tap.FacingB, pair.B.Channel.RemoteEndPoint);

        // Confidentiality: the message crosses the tap, but its text does not.
        const string secret = "the door code is 4711";
        await pair.A.Channel.SendAsync(Text(secret)).WaitAsync(Bound);
        Assert.Equal(secret, await pair.B.Channel.ReceiveTextAsync(Bound));
        var frames = tap.FramesAToB.ToArray();
        var publish = Assert.Single(frames.Take(1), f => f.Length == PeerCipher.Overhead + MqttPacketWriter.MeasurePublish(MqttProtocolVersion.V311, "p"u8, 1, false, false, 1, default, Encoding.UTF8.GetBytes(secret)));
        Assert.All(frames, f => Assert.Equal(PeerCipher.Version1, f[0]));
        Assert.All(frames, f => Assert.Equal(-1, f.AsSpan().IndexOf(Encoding.UTF8.GetBytes("door code"))));
        var ack = tap.FramesBToA.ToArray().First(f => f.Length == PeerCipher.Overhead + 4);

        // A replay from the path's own address: refused by the window, not merely de-duplicated by packet id.
        var duplicates = pair.B.Channel.DuplicatesSuppressed;
        await tap.InjectToBAsync(publish);
        await Poll.UntilAsync(() => pair.B.Channel.FramesReplayed == 1, "B to count the replay", Bound);
        Assert.Equal(duplicates, pair.B.Channel.DuplicatesSuppressed);
        await AssertNothingDeliveredAsync(pair, "after the replay");

        // A forgery with a fresh counter and an unsealed PUBLISH, from the path's address.
        var forged = RandomNumberGenerator.GetBytes(publish.Length);
        publish.AsSpan(0, PeerCipher.HeaderLength).CopyTo(forged);
        forged[9] ^= 0x40;
        var plain = new System.Buffers.ArrayBufferWriter<byte>();
        MqttPacketWriter.WritePublish(plain, MqttProtocolVersion.V311, "p"u8, 1, false, false, 999, default, Encoding.UTF8.GetBytes("injected"));
        await tap.InjectToBAsync(forged);
        await tap.InjectToBAsync(plain.WrittenSpan.ToArray());
        await Poll.UntilAsync(() => pair.B.Channel.FramesRejected == 2, "B to reject the forgery and the unsealed PUBLISH", Bound);
        await AssertNothingDeliveredAsync(pair, "after the forgeries");

        // B's own PUBACK reflected back to B: sealed under the other direction's key (or, when its counter was
        // already seen in A's direction, refused by the window before the tag is checked, RFC 4303 §3.4.3).
        await tap.InjectToBAsync(ack);
        await Poll.UntilAsync(() => pair.B.Channel.FramesDropped == 4, "B to drop its reflected PUBACK", Bound);
        await AssertNothingDeliveredAsync(pair, "after the reflection");

        // Out of the window: once 1,100 more frames went A → B, the first one's packet id has left MQTT's
        // duplicate memory (1,024 ids), so only the counter window stands between a replay and a delivery.
        var drain = Task.Run(async () =>
        {
            for (var i = 0; i < 1100; i++)
            {
                Assert.Equal($"m{i}", await pair.B.Channel.ReceiveTextAsync(Bound));
            }
        });
        for (var i = 0; i < 1100; i++)
        {
            await pair.A.Channel.SendAsync(Text($"m{i}")).WaitAsync(Bound);
        }

        await drain.WaitAsync(Bound);
        await tap.InjectToBAsync(publish);
        await Poll.UntilAsync(() => pair.B.Channel.FramesOutsideWindow == 1, "B to count the stale replay", Bound);
        await AssertNothingDeliveredAsync(pair, "after the stale replay");
        Assert.Equal(5, pair.B.Channel.FramesDropped);
        Assert.Equal(0, pair.B.Channel.FramesFromUnknownSource);
        Assert.Equal(0, pair.A.Channel.FramesDropped);
    }

    [Fact]
    public async Task AFrameFromAnAddressNoCheckValidated_IsDroppedAndCounted()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var pair = await IntroduceAsync(server, Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly), Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly));
        var captured = new ConcurrentQueue<byte[]>();
        pair.A.OutgoingFilter = d =>
        {
            captured.Enqueue(d.ToArray());
            return 1;
        };
        await pair.A.Channel.SendAsync(Text("over the relay")).WaitAsync(Bound);
        Assert.Equal("over the relay", await pair.B.Channel.ReceiveTextAsync(Bound));

        using var stranger = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        stranger.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        Assert.True(captured.TryDequeue(out var frame));
        await stranger.SendToAsync(frame, pair.B.LocalEndPoint);
        await Poll.UntilAsync(() => pair.B.Channel.FramesFromUnknownSource == 1, "B to drop the stranger's frame", Bound);
        await AssertNothingDeliveredAsync(pair, "after the stranger");

        // The same bytes again through the relay (a relay operator replaying them): the window refuses them.
        pair.A.OutgoingFilter = null;
        await pair.A.SendDatagramAsync(frame, CancellationToken.None);
        await Poll.UntilAsync(() => pair.B.Channel.FramesReplayed == 1, "B to refuse the relayed replay", Bound);
        await AssertNothingDeliveredAsync(pair, "after the relayed replay");
    }

    [Fact]
    public async Task AChaChaPeerAndAnAesOnlyPeer_AgreeOnAesGcm_AndTalkBothWays()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var pair = await IntroduceAsync(
            server,
            Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly),
            Options(o =>
            {
                o.PathPolicy = PeerPathPolicy.RelayOnly;
                o.AesGcmOnly = true;
            }));

        // A speaks first, in ChaCha20-Poly1305 where it has it: B cannot open it, answers with an AES-GCM
        // notice, and A's retransmission is in AES-GCM.
        await pair.A.Channel.SendAsync(Text("from A")).WaitAsync(Bound);
        Assert.Equal("from A", await pair.B.Channel.ReceiveTextAsync(Bound));
        await pair.B.Channel.SendAsync(Text("from B")).WaitAsync(Bound);
        Assert.Equal("from B", await pair.A.Channel.ReceiveTextAsync(Bound));
        await pair.A.Channel.SendAsync(Text("again from A")).WaitAsync(Bound);
        Assert.Equal("again from A", await pair.B.Channel.ReceiveTextAsync(Bound));
        Assert.Equal(0, pair.A.Channel.FramesRejected);
        Assert.True(pair.B.Channel.FramesRejected >= (ChaCha20Poly1305.IsSupported ? 1 : 0));
    }

    [Fact]
    public async Task ASpoofedCheck_DoesNotMoveTheSelectedPath_ForgedOrReplayed()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var pair = await IntroduceAsync(server, Options(), Options());
        await Task.WhenAll(pair.A.Channel.WaitForPathAsync(PeerPath.Direct, Bound), pair.B.Channel.WaitForPathAsync(PeerPath.Direct, Bound));
        var selected = pair.B.Channel.RemoteEndPoint;
        Assert.Equal(pair.A.LocalEndPoint, selected);
        var moves = 0;
        pair.B.Channel.PathChanged += (_, _) => Interlocked.Increment(ref moves);
        using var attacker = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        attacker.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        // Without the key: a nominating check with a key of the attacker's own is refused and counted.
        var failures = pair.B.IntegrityFailures;
        await attacker.SendToAsync(NominatingCheck(pair.A.Setup.SessionId, RandomNumberGenerator.GetBytes(32)), pair.B.LocalEndPoint);
        await Poll.UntilAsync(() => pair.B.IntegrityFailures == failures + 1, "B to refuse the forged check", Bound);

        // With a captured check (the real key's MAC) replayed from the attacker's address: B answers and checks
        // the attacker's address itself, and nothing answers that check with the key, so the path stays.
        await attacker.SendToAsync(NominatingCheck(pair.A.Setup.SessionId, pair.A.Setup.Key), pair.B.LocalEndPoint);
        var buffer = new byte[2048];
        using var timeout = new CancellationTokenSource(Bound);
        while (true)
        {
            var received = await attacker.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            if (StunMessageReader.TryParse(buffer.AsSpan(0, received), StunReaderLimits.Default, out var message, out _) == System.Buffers.OperationStatus.Done
                && message.Header.Class == StunClass.Request)
            {
                break; // B's triggered check to the attacker: the replay has been handled
            }
        }

        Assert.Equal(selected, pair.B.Channel.RemoteEndPoint);
        Assert.Equal(0, Volatile.Read(ref moves));
        await pair.A.Channel.SendAsync(Text("still direct")).WaitAsync(Bound);
        Assert.Equal("still direct", await pair.B.Channel.ReceiveTextAsync(Bound));
        Assert.Equal(selected, pair.B.Channel.RemoteEndPoint);
    }

    [Fact]
    public async Task HostileCandidates_AreNeverChecked_AndBirthdayProbesGoOnlyToTheFilteredServerReflexiveAddress()
    {
        // As a hostile peer (or server) would hand them: this host's loopback, multicast, a metadata service,
        // unspecified, broadcast, a multicast "srflx" listed first, junk; and two honest ones (TEST-NET-1).
        IReadOnlyList<RendezvousCandidate> remote =
        [
            new("host", "127.0.0.1", 4000, 1), new("host", "224.0.0.1", 4000, 1), new("host", "169.254.169.254", 80, 1),
            new("host", "0.0.0.0", 4000, 1), new("host", "255.255.255.255", 4000, 1), new("srflx", "224.0.0.2", 5000, 1),
            new("relay", "not-an-address", 3478, 1), new("host", "192.0.2.10", 4000, 1), new("srflx", "192.0.2.20", 6000, 1),
        ];
        var options = Options(o =>
        {
            o.AllowLoopbackCandidates = false;
            o.BirthdayProbing = true;
            o.BirthdayProbes = 40;
            o.BirthdayWindow = TimeSpan.FromMilliseconds(400);
        });
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var setup = new PeerSessionSetup("0123456789abcdef0123456789abcdef", "b", RandomNumberGenerator.GetBytes(32), true, remote, "PortRestricted", "Symmetric");
        await using var session = new PeerSession(setup, new PeerLocal(socket, null, []), options, TimeProvider.System);
        var checkedAddresses = new ConcurrentDictionary<IPAddress, int>();
        session.CheckFilter = r =>
        {
            checkedAddresses.AddOrUpdate(r.Address, 1, static (_, n) => n + 1);
            return false; // nothing leaves this host
        };

        Assert.Equal(7, session.Channel.CandidatesDropped);
        Assert.Equal(2, session.CheckTargetCount);
        using var stop = new CancellationTokenSource();
        var start = session.StartAsync(stop.Token);
        await Poll.UntilAsync(() => session.ProbesSent > 0, "the first birthday probe", Bound);
        await session.BirthdayCompleted.WaitAsync(Bound);
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => start);

        Assert.Equal([IPAddress.Parse("192.0.2.10"), IPAddress.Parse("192.0.2.20")], checkedAddresses.Keys.OrderBy(a => a.ToString()));
        Assert.True(session.ProbesSent > 20);
        Assert.True(checkedAddresses[IPAddress.Parse("192.0.2.20")] >= session.ProbesSent);
    }

    [Fact]
    public async Task ACheckFromALoopbackSource_IsNotLearnedAsPeerReflexive_UnlessTheOptionsAllowIt()
    {
        var key = RandomNumberGenerator.GetBytes(32);
        const string sessionId = "0123456789abcdef0123456789abcdef";
        foreach (var allow in new[] { false, true })
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var options = Options(o => o.AllowLoopbackCandidates = allow);
            await using var session = new PeerSession(new PeerSessionSetup(sessionId, "a", key, false, [], null, null), new PeerLocal(socket, null, []), options, TimeProvider.System);
            using var stop = new CancellationTokenSource();
            var start = session.StartAsync(stop.Token);
            using var peer = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            peer.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            await peer.SendToAsync(NominatingCheck(sessionId, key), session.LocalEndPoint);
            await Poll.UntilAsync(() => session.PeerReflexiveLearned + session.Channel.CandidatesDropped == 1, "the check to be handled", Bound);
            Assert.Equal(allow ? 1 : 0, session.PeerReflexiveLearned);
            Assert.Equal(allow ? 0 : 1, session.Channel.CandidatesDropped);
            await stop.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => start);
        }
    }

    /// <summary>A Binding request as the controlling side nominates: USERNAME, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT.</summary>
    private static byte[] NominatingCheck(string sessionId, byte[] key)
    {
        var buffer = new byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), StunTransactionId.NewRandom());
        writer.WriteAttribute(StunAttributeType.Username, Encoding.UTF8.GetBytes(sessionId));
        writer.WriteAttribute(StunAttributeType.IceControlling, RandomNumberGenerator.GetBytes(8));
        writer.WriteAttribute(StunAttributeType.UseCandidate, ReadOnlySpan<byte>.Empty);
        writer.WriteMessageIntegrity(key);
        writer.WriteFingerprint();
        return buffer[..writer.Length];
    }

    /// <summary>
    /// A UDP forwarder between A and B: A sends to <see cref="ForA"/>, B sees the tap's <see cref="FacingB"/>
    /// socket as A. It records the sealed frames each way and can inject datagrams towards B from
    /// <see cref="FacingB"/>, i.e. with the source address B's direct path expects.
    /// </summary>
    private sealed class UdpTap : IAsyncDisposable
    {
        private readonly Socket _facingA = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        private readonly Socket _facingB = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _loops = [];
        private IPEndPoint? _a;
        private IPEndPoint? _b;

        public UdpTap()
        {
            _facingA.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _facingB.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        }

        public IPEndPoint ForA => (IPEndPoint)_facingA.LocalEndPoint!;

        public IPEndPoint FacingB => (IPEndPoint)_facingB.LocalEndPoint!;

        public ConcurrentQueue<byte[]> FramesAToB { get; } = new();

        public ConcurrentQueue<byte[]> FramesBToA { get; } = new();

        public void Start(IPEndPoint b)
        {
            _b = b;
            _loops.Add(ForwardAsync(_facingA, _facingB, fromA: true));
            _loops.Add(ForwardAsync(_facingB, _facingA, fromA: false));
        }

        public async Task InjectToBAsync(byte[] datagram) => await _facingB.SendToAsync(datagram, _b!);

        private async Task ForwardAsync(Socket from, Socket to, bool fromA)
        {
            var buffer = new byte[4096];
            var any = new IPEndPoint(IPAddress.Any, 0);
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    SocketReceiveFromResult result;
                    try
                    {
                        result = await from.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token);
                    }
                    catch (SocketException)
                    {
                        continue;
                    }

                    var datagram = buffer.AsSpan(0, result.ReceivedBytes).ToArray();
                    if (datagram.Length > 0 && datagram[0] == PeerCipher.Version1)
                    {
                        (fromA ? FramesAToB : FramesBToA).Enqueue(datagram);
                    }

                    if (fromA)
                    {
                        _a = (IPEndPoint)result.RemoteEndPoint;
                    }

                    var target = fromA ? _b : _a;
                    if (target is not null)
                    {
                        await to.SendToAsync(datagram, target);
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _facingA.Dispose();
            _facingB.Dispose();
            await Task.WhenAll(_loops).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            _stop.Dispose();
        }
    }
}
