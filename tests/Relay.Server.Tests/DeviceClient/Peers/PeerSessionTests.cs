using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Rendezvous;
using Relay.Protocol.Stun;
using Relay.Server.Tests.DeviceClientNat;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// Two PeerSession engines on 127.0.0.1, introduced by the test itself (the signalling server is another
/// branch), with our real TURN server in-process for the relayed candidates. Every wait is on an event or
/// a counter, bounded.
/// </summary>
public sealed class PeerSessionTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private static PeerOptions Options(Action<PeerOptions>? configure = null)
    {
        var options = new PeerOptions
        {
            LocalAddress = IPAddress.Loopback,
            AllowLoopbackCandidates = true,
            InitialRetransmitTimeout = TimeSpan.FromMilliseconds(100),
            ServerRetransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(100), MaxRequests = 5 },
        };
        configure?.Invoke(options);
        return options;
    }

    private static PeerServers Servers(TurnServerUnderTest server) =>
        new(server.Endpoint, server.Endpoint, server.Endpoint, new TurnCredentials(TurnServerUnderTest.User, TurnServerUnderTest.Password));

    /// <summary>The two sides of one session, introduced the way the server would (candidates crossed, one key).</summary>
    private sealed class Pair : IAsyncDisposable
    {
        public required PeerSession A { get; init; }

        public required PeerSession B { get; init; }

        public List<(string Side, string Path, long? Ms)> Results { get; } = [];

        public async ValueTask DisposeAsync()
        {
            await A.DisposeAsync();
            await B.DisposeAsync();
        }
    }

    private static async Task<Pair> IntroduceAsync(
        TurnServerUnderTest server,
        PeerOptions a,
        PeerOptions b,
        Func<IReadOnlyList<RendezvousCandidate>, IReadOnlyList<RendezvousCandidate>>? candidatesOfA = null,
        string? natA = null,
        string? natB = null,
        Action<PeerSession, PeerSession>? beforeStart = null)
    {
        var localA = await PeerCandidates.GatherAsync(a, Servers(server), CancellationToken.None);
        var localB = await PeerCandidates.GatherAsync(b, Servers(server), CancellationToken.None);
        var key = RandomNumberGenerator.GetBytes(32);
        var sessionId = Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();
        var results = new List<(string, string, long?)>();
        var sessionA = new PeerSession(new PeerSessionSetup(sessionId, "b", key, true, localB.Candidates, natA, natB), localA, a, TimeProvider.System, (_, p, ms) => { lock (results) { results.Add(("a", p, ms)); } });
        var sessionB = new PeerSession(new PeerSessionSetup(sessionId, "a", key, false, candidatesOfA?.Invoke(localA.Candidates) ?? localA.Candidates, natB, natA), localB, b, TimeProvider.System, (_, p, ms) => { lock (results) { results.Add(("b", p, ms)); } });
        beforeStart?.Invoke(sessionA, sessionB);
        await Task.WhenAll(sessionA.StartAsync(CancellationToken.None), sessionB.StartAsync(CancellationToken.None)).WaitAsync(Bound);
        var pair = new Pair { A = sessionA, B = sessionB };
        pair.Results.AddRange(results);
        return pair;
    }

    private static ReadOnlyMemory<byte> Text(string text) => System.Text.Encoding.UTF8.GetBytes(text);

    [Fact]
    public async Task RelayFirst_TheFirstMessageGoesThroughTheRelay_ThenTheChannelUpgradesToDirect()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        var gate = new TaskCompletionSource();
        await using var pair = await IntroduceAsync(server, Options(), Options(), beforeStart: (a, b) =>
        {
            a.ChecksGate = gate.Task;
            b.ChecksGate = gate.Task;
        });

        // Relay first: usable at once, before any check ran.
        Assert.Equal(PeerPath.Relayed, pair.A.Channel.Path);
        await pair.A.Channel.SendAsync(Text("hello over the relay")).WaitAsync(Bound);
        Assert.Equal("hello over the relay", await pair.B.Channel.ReceiveTextAsync(Bound));
        Assert.True(pair.B.RelayDatagramsReceived >= 1);
        Assert.Equal(0, pair.B.DirectDatagramsReceived);
        Assert.Equal(0, pair.A.ChecksSent);

        var directA = pair.A.Channel.WaitForPathAsync(PeerPath.Direct, Bound);
        var directB = pair.B.Channel.WaitForPathAsync(PeerPath.Direct, Bound);
        gate.SetResult();
        await Task.WhenAll(directA, directB);

        // Direct: B sees A's session socket as the source, and the relay counters stay flat.
        var relaySentA = pair.A.RelayDatagramsSent;
        var relayReceivedB = pair.B.RelayDatagramsReceived;
        var fromA = pair.B.DatagramsFrom(pair.A.LocalEndPoint);
        await pair.A.Channel.SendAsync(Text("hello direct")).WaitAsync(Bound);
        Assert.Equal("hello direct", await pair.B.Channel.ReceiveTextAsync(Bound));
        await pair.B.Channel.SendAsync(Text("and back")).WaitAsync(Bound);
        Assert.Equal("and back", await pair.A.Channel.ReceiveTextAsync(Bound));
        Assert.True(pair.B.DatagramsFrom(pair.A.LocalEndPoint) > fromA);
        Assert.Equal(relaySentA, pair.A.RelayDatagramsSent);
        Assert.Equal(relayReceivedB, pair.B.RelayDatagramsReceived);
        Assert.Equal(pair.A.LocalEndPoint, pair.B.Channel.RemoteEndPoint);
        Assert.NotNull(pair.A.Channel.RoundTripTime);
        Assert.True(pair.A.Channel.BytesSent > 0 && pair.B.Channel.BytesReceived > 0);
    }

    [Fact]
    public async Task PeerReflexive_ACheckFromAnUnknownAddressIsLearnedAndAnswered()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);

        // A offers no host candidate (and its srflx equals its host on loopback, so it has none): B only
        // learns A's address from A's checks, as with a symmetric NAT's fresh port.
        await using var pair = await IntroduceAsync(server, Options(o => o.UseHost = false), Options(), candidatesOfA: c => [.. c.Where(x => x.Type == "relay")]);
        await Task.WhenAll(pair.A.Channel.WaitForPathAsync(PeerPath.Direct, Bound), pair.B.Channel.WaitForPathAsync(PeerPath.Direct, Bound));

        Assert.True(pair.B.PeerReflexiveLearned >= 1);
        Assert.Equal(pair.A.LocalEndPoint, pair.B.Channel.RemoteEndPoint);
        await pair.B.Channel.SendAsync(Text("to the learned address")).WaitAsync(Bound);
        Assert.Equal("to the learned address", await pair.A.Channel.ReceiveTextAsync(Bound));
    }

    [Fact]
    public async Task RelayOnly_StaysRelayed_AndSendsNoChecks()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var pair = await IntroduceAsync(server, Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly), Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly));

        for (var i = 0; i < 5; i++)
        {
            await pair.A.Channel.SendAsync(Text($"m{i}")).WaitAsync(Bound);
            Assert.Equal($"m{i}", await pair.B.Channel.ReceiveTextAsync(Bound));
        }

        Assert.Equal(PeerPath.Relayed, pair.A.Channel.Path);
        Assert.Equal(PeerPath.Relayed, pair.B.Channel.Path);
        Assert.Equal(0, pair.A.ChecksSent + pair.B.ChecksSent);
        Assert.Equal(0, pair.B.DirectDatagramsReceived);
        Assert.True(pair.B.RelayDatagramsReceived >= 5);
    }

    [Fact]
    public async Task QoS1_ADroppedDatagramIsRetransmitted_AndADuplicateIsDeliveredOnce()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var pair = await IntroduceAsync(server, Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly), Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly));

        // Drop the first send of the message; the retransmission (DUP) gets through.
        var sends = 0;
        pair.A.OutgoingFilter = d => d.Span[0] == PeerCipher.Version1 && Interlocked.Increment(ref sends) == 1 ? 0 : 1;
        await pair.A.Channel.SendAsync(Text("lost once")).WaitAsync(Bound);
        Assert.Equal("lost once", await pair.B.Channel.ReceiveTextAsync(Bound));
        Assert.True(pair.A.Channel.Retransmissions >= 1);

        // A lost PUBACK: the retransmission (DUP, a fresh frame) is acknowledged again but delivered once (MQTT §4.3.2).
        var acks = 0;
        pair.B.OutgoingFilter = _ => Interlocked.Increment(ref acks) == 1 ? 0 : 1;
        await pair.A.Channel.SendAsync(Text("ack lost")).WaitAsync(Bound);
        Assert.Equal("ack lost", await pair.B.Channel.ReceiveTextAsync(Bound));
        Assert.True(pair.B.Channel.DuplicatesSuppressed >= 1);
        pair.B.OutgoingFilter = null;

        // Every datagram twice (the network duplicating it): each message is delivered once; the identical
        // copies are refused by the replay window before MQTT sees them.
        pair.A.OutgoingFilter = _ => 2;
        await pair.A.Channel.SendAsync(Text("twice")).WaitAsync(Bound);
        await pair.A.Channel.SendAsync(Text("after")).WaitAsync(Bound);
        Assert.Equal("twice", await pair.B.Channel.ReceiveTextAsync(Bound));
        Assert.Equal("after", await pair.B.Channel.ReceiveTextAsync(Bound));
        await Poll.UntilAsync(() => pair.B.Channel.FramesReplayed >= 2, "B to refuse both copies", Bound);
        Assert.False(pair.B.Channel.ReceiveAsync().IsCompleted);

        // A peer that never acknowledges: TimeoutException after MaxSendAttempts.
        pair.A.OutgoingFilter = _ => 0;
        await Assert.ThrowsAsync<TimeoutException>(() => pair.A.Channel.SendAsync(Text("into the void")).WaitAsync(Bound));
    }

    [Fact]
    public async Task Integrity_ACheckWithTheWrongKeyIsDropped_AndTheRightKeyIsAnswered()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        await using var pair = await IntroduceAsync(server, Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly), Options(o => o.PathPolicy = PeerPathPolicy.RelayOnly));
        var sessionId = pair.A.Setup.SessionId;
        using var attacker = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        attacker.Bind(new IPEndPoint(IPAddress.Loopback, 0));

        var forged = StunTransactionId.NewRandom();
        await attacker.SendToAsync(Check(forged, sessionId, RandomNumberGenerator.GetBytes(32)), pair.B.LocalEndPoint);
        await Poll.UntilAsync(() => pair.B.IntegrityFailures >= 1, "B to count the forged check", Bound);

        var genuine = StunTransactionId.NewRandom();
        await attacker.SendToAsync(Check(genuine, sessionId, pair.A.Setup.Key), pair.B.LocalEndPoint);
        var buffer = new byte[2048];
        using var timeout = new CancellationTokenSource(Bound);
        var received = await attacker.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
        Assert.Equal(OperationStatusDone, StunMessageReader.TryParse(buffer.AsSpan(0, received), StunReaderLimits.Default, out var response, out _));
        Assert.Equal(genuine, response.Header.TransactionId); // the forged check got no answer
        Assert.Equal(StunClass.SuccessResponse, response.Header.Class);
        Assert.True(response.VerifyMessageIntegrity(pair.A.Setup.Key));
        Assert.Equal(1, pair.B.IntegrityFailures);
    }

    private const System.Buffers.OperationStatus OperationStatusDone = System.Buffers.OperationStatus.Done;

    [Fact]
    public async Task Birthday_ProbeCountNeverExceedsTheLimit()
    {
        await using var server = await TurnServerUnderTest.StartAsync(TurnServerKind.Ours);
        var options = Options(o =>
        {
            o.BirthdayProbes = 100;
            o.BirthdayWindow = TimeSpan.FromMilliseconds(500);
            o.UseHost = false;
        });

        // B's only direct candidate is a "public" address on 127.0.0.2 where nothing listens.
        var localA = await PeerCandidates.GatherAsync(options, Servers(server), CancellationToken.None);
        var key = RandomNumberGenerator.GetBytes(32);
        IReadOnlyList<RendezvousCandidate> remote = [new("srflx", "127.0.0.2", 40000, 100)];
        await using var session = new PeerSession(new PeerSessionSetup("0123456789abcdef0123456789abcdef", "b", key, true, remote, "PortRestrictedCone", "Symmetric"), localA, options, TimeProvider.System);
        await session.StartAsync(CancellationToken.None).WaitAsync(Bound);
        await Poll.UntilAsync(() => session.ProbesSent > 0, "the first probe", Bound);
        await session.BirthdayCompleted.WaitAsync(Bound);
        var probes = session.ProbesSent;
        Assert.InRange(probes, 1, 100);
        Assert.Equal(PeerPath.Relayed, session.Channel.Path);

        // Off means off.
        var off = Options(o => o.BirthdayProbing = false);
        var localC = await PeerCandidates.GatherAsync(off, Servers(server), CancellationToken.None);
        await using var quiet = new PeerSession(new PeerSessionSetup("0123456789abcdef0123456789abcdef", "b", key, true, remote, "PortRestrictedCone", "Symmetric"), localC, off, TimeProvider.System);
        await quiet.StartAsync(CancellationToken.None).WaitAsync(Bound);
        await Poll.UntilAsync(() => quiet.ChecksSent > 0, "the first check", Bound);
        await quiet.BirthdayCompleted.WaitAsync(Bound);
        Assert.Equal(0, quiet.ProbesSent);

        // The symmetric side opens BirthdayPorts sockets and checks the easy side's public address from each.
        var symmetric = Options(o =>
        {
            o.BirthdayPorts = 16;
            o.BirthdayWindow = TimeSpan.FromMilliseconds(500);
        });
        var localD = await PeerCandidates.GatherAsync(symmetric, Servers(server), CancellationToken.None);
        await using var many = new PeerSession(new PeerSessionSetup("0123456789abcdef0123456789abcdef", "b", key, false, remote, "Symmetric", "PortRestrictedCone"), localD, symmetric, TimeProvider.System);
        await many.StartAsync(CancellationToken.None).WaitAsync(Bound);
        await Poll.UntilAsync(() => many.BirthdaySocketsOpened == 16 && many.ProbesSent >= 16, "16 birthday sockets, each probing", Bound);
        await many.BirthdayCompleted.WaitAsync(Bound);
    }

    private static byte[] Check(StunTransactionId id, string sessionId, byte[] key)
    {
        var buffer = new byte[256];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), id);
        writer.WriteAttribute(StunAttributeType.Username, System.Text.Encoding.UTF8.GetBytes(sessionId));
        writer.WriteMessageIntegrity(key);
        writer.WriteFingerprint();
        return buffer[..writer.Length];
    }
}
