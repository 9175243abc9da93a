using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Relay.Protocol.Stun;
using Relay.Server.Telemetry;
using Relay.Server.Turn;
using static Relay.Server.Tests.StunTestClient;
using static Relay.Server.Tests.Turn.TurnTestClient;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// Random and mutated bytes at the TURN port, over UDP and TCP, while a legitimate client holds an
/// allocation: afterwards the server still answers, the allocation still relays, garbage created
/// nothing, and neither memory nor descriptors leaked. Seeded, so a failure replays exactly.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed partial class TurnFuzzTests
{
    private const int Seed = 0x7E57_2026;
    private const int Datagrams = 20_000;
    private const int DatagramsPerBarrier = 250;
    private const int TcpConnections = 64;
    private const int TcpParallel = 4;
    private const ushort Channel = 0x4321;

    // Attribute types worth landing on: every TURN and long-term credential attribute, and a few others.
    private static readonly ushort[] InterestingTypes =
    [
        0x0001, 0x0006, 0x0008, 0x0009, 0x000A, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015, 0x0016, 0x0017,
        0x0018, 0x0019, 0x001A, 0x001C, 0x001D, 0x001E, 0x0020, 0x0022, 0x0024, 0x0025, 0x002A, 0x8000, 0x8001,
        0x8002, 0x8022, 0x8028, 0x7FFF, 0xFFFF,
    ];

    private static readonly ushort[] Methods = [0x001, 0x003, 0x004, 0x006, 0x007, 0x008, 0x009, 0x00A, 0x00B, 0x00C];

    [Fact]
    public async Task RandomAndMutatedTraffic_LeavesTheServerAnswering_TheAllocationRelaying_AndNothingLeaked()
    {
        // The rate limit would turn most of the fuzz away before any parser saw it.
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Turn:Users:0=alice:alice-secret", "Relay:Turn:AllowLoopbackPeers=true", "Relay:Stun:RateLimit:Enabled=false");
        var relay = server.Services.GetRequiredService<TurnRelay>();
        var metrics = server.Services.GetRequiredService<TurnMetrics>();

        // The peer sits alone on its own loopback address: the permission names that address, so even a
        // Send indication whose port a mutation changed can only reach an unused port of it, nobody else.
        using var peer = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        peer.Bind(new IPEndPoint(IPAddress.Parse("127.77.13.5"), 0));
        var peerEndpoint = (IPEndPoint)peer.LocalEndPoint!;
        await using var legit = Udp(server, "alice", "alice-secret");
        var relayed = (await legit.AllocateAsync()).XorRelayed!;
        await legit.CreatePermissionAsync(peerEndpoint);
        await legit.ChannelBindAsync(Channel, peerEndpoint);
        await AssertRelaysEndToEndAsync(legit, peer, relayed);

        var memoryBefore = GC.GetTotalMemory(forceFullCollection: true);
        var descriptorsBefore = OpenDescriptors();
        var tcpBefore = OpenTcpConnections(server);

        var random = new Random(Seed);
        var templates = BuildTemplates(legit, peerEndpoint);

        // UDP: four in ten datagrams from the legitimate 5-tuple (whose allocation they could disturb), the
        // rest from strangers. A Binding round trip on the same socket every few hundred keeps the pace
        // within what the socket buffers hold, so the datagrams reach the parsers instead of the floor.
        var strangers = Enumerable.Range(0, 4).Select(static _ => UdpClient(IPAddress.Loopback)).ToArray();
        try
        {
            for (var sent = 0; sent < Datagrams; sent += DatagramsPerBarrier)
            {
                for (var i = 0; i < DatagramsPerBarrier; i++)
                {
                    if (random.Next(10) < 4)
                    {
                        await legit.SendRawAsync(NextDatagram(random, templates, legitimate: true));
                    }
                    else
                    {
                        await strangers[random.Next(strangers.Length)].SendToAsync(NextDatagram(random, templates, legitimate: false), legit.Server);
                    }
                }

                var binding = await legit.RequestAsync(legit.Build(StunMethod.Binding, authenticate: false));
                AssertSuccess(binding);
                foreach (var stranger in strangers)
                {
                    await BindingBarrierAsync(stranger, legit.Server);
                }
            }
        }
        finally
        {
            foreach (var stranger in strangers)
            {
                stranger.Dispose();
            }
        }

        // Only a request carrying alice's valid MESSAGE-INTEGRITY could allocate, and from her 5-tuple that is 437.
        Assert.Equal(1, relay.AllocationCount);
        Assert.Equal(1, metrics.AllocationsCreated);

        // TCP: several connections of random bytes and of valid and mutated messages, written in odd pieces.
        // Authenticated Allocates are left out of the streams: a valid one would rightly allocate.
        for (var round = 0; round < TcpConnections / TcpParallel; round++)
        {
            var streams = Enumerable.Range(0, TcpParallel).Select(_ => (Seed: random.Next(), Stream: NextStream(random, templates))).ToArray();
            await Task.WhenAll(streams.Select(s => SendStreamAsync(legit.Server, s.Stream, new Random(s.Seed))));
        }

        await Poll.UntilAsync(() => OpenTcpConnections(server) == tcpBefore, "the fuzzed TCP connections to close on the server");

        // The server still answers a Binding request from anyone.
        using (var probe = UdpClient(IPAddress.Loopback))
        {
            var id = StunTransactionId.NewRandom();
            var (response, _) = await ExchangeAsync(probe, Request(id), legit.Server);
            var parsed = Parse(response);
            Assert.Equal(StunClass.SuccessResponse, parsed.Class);
            Assert.Equal(id, parsed.TransactionId);
        }

        // The legitimate allocation survived and relays both ways; garbage created none.
        await AssertRelaysEndToEndAsync(legit, peer, relayed);
        AssertSuccess(await legit.SendAuthenticatedAsync(StunMethod.Refresh));
        Assert.Equal(1, relay.AllocationCount);
        Assert.Equal(1, metrics.AllocationsCreated);
        Assert.Equal(1, metrics.Allocations);

        // Bounded memory and no descriptor leak (relay sockets close on their loop thread, so wait for it).
        var memoryAfter = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(memoryAfter - memoryBefore < 64L * 1024 * 1024, $"managed memory grew from {memoryBefore:N0} to {memoryAfter:N0} bytes");
        await Poll.UntilAsync(() => OpenDescriptors() <= descriptorsBefore + 8, $"open descriptors to return near {descriptorsBefore} (now {OpenDescriptors()})");

        // And a new client can still allocate and delete.
        await using var newcomer = Udp(server, "alice", "alice-secret");
        await newcomer.AllocateAsync();
        AssertSuccess(await newcomer.SendAuthenticatedAsync(StunMethod.Refresh, (ref StunMessageWriter w) => w.WriteUInt32(StunAttributeType.Lifetime, 0)));
        Assert.Equal(1, relay.AllocationCount);
    }

    /// <summary>A marked payload each way over the channel; the peer skips whatever garbage the fuzz relayed to it.</summary>
    private static async Task AssertRelaysEndToEndAsync(TurnTestClient client, Socket peer, IPEndPoint relayed)
    {
        // Fuzzed ChannelData and Send indications from the legitimate 5-tuple reached the peer too, and may
        // have filled its buffer; what is queued is already there (each batch ended with a round trip on
        // the same socket), so empty it first, or the marker could be dropped by the kernel.
        // (Poll, not Available: FIONREAD reports 0 for a queued zero-length datagram, which the fuzz relays too.)
        var buffer = new byte[65536];
        while (peer.Poll(0, SelectMode.SelectRead))
        {
            peer.Receive(buffer);
        }

        var outbound = Encoding.ASCII.GetBytes("to-peer-" + Guid.NewGuid().ToString("N"));
        await client.SendChannelDataAsync(Channel, outbound);
        using (var timeout = new CancellationTokenSource(TurnTestClient.Timeout))
        {
            while (true)
            {
                var result = await peer.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
                if (buffer.AsSpan(0, result.ReceivedBytes).SequenceEqual(outbound))
                {
                    Assert.Equal(relayed, result.RemoteEndPoint);
                    break;
                }
            }
        }

        var inbound = Encoding.ASCII.GetBytes("to-client-" + Guid.NewGuid().ToString("N"));
        await peer.SendToAsync(inbound, relayed);
        while (true)
        {
            var frame = await client.ReceiveDataAsync();
            if (frame.IsChannelData && frame.Data.AsSpan().SequenceEqual(inbound))
            {
                Assert.Equal(Channel, frame.Channel);
                return;
            }
        }
    }

    /// <summary>Valid messages to mutate: Authenticated ones carry alice's current NONCE and key.</summary>
    private static Templates BuildTemplates(TurnTestClient legit, IPEndPoint peer)
    {
        byte[] Send(byte[] data) => legit.Build(StunMethod.Send, (ref StunMessageWriter w) =>
        {
            WritePeer(ref w, peer);
            w.WriteAttribute(StunAttributeType.Data, data);
        }, authenticate: false, messageClass: StunClass.Indication);

        byte[][] authenticated =
        [
            legit.Build(StunMethod.Refresh, (ref StunMessageWriter w) => w.WriteUInt32(StunAttributeType.Lifetime, 600)),
            legit.Build(StunMethod.CreatePermission, (ref StunMessageWriter w) => WritePeer(ref w, peer)),
            legit.Build(StunMethod.ChannelBind, (ref StunMessageWriter w) =>
            {
                WriteChannelNumber(ref w, Channel);
                WritePeer(ref w, peer);
            }),
        ];
        byte[][] unauthenticated =
        [
            legit.Build(StunMethod.Allocate, UdpTransport, authenticate: false),
            legit.Build(StunMethod.Allocate, (ref StunMessageWriter w) =>
            {
                UdpTransport(ref w);
                w.WriteUInt32(StunAttributeType.Lifetime, 3600);
                w.WriteAttribute(StunAttributeType.EvenPort, [0x80]);
                w.WriteAttribute(StunAttributeType.DontFragment, []);
            }, authenticate: false),
            legit.Build(StunMethod.Binding, authenticate: false),
            Send("fuzz"u8.ToArray()),
            Send(new byte[301]),
            ChannelData(Channel, "fuzz!"u8.ToArray(), pad: false),
            ChannelData(Channel, new byte[257], pad: true),
        ];
        var allocate = legit.Build(StunMethod.Allocate, UdpTransport);
        return new Templates(authenticated, unauthenticated, allocate);
    }

    private static byte[] NextDatagram(Random random, Templates templates, bool legitimate)
    {
        switch (random.Next(10))
        {
            case 0:
            case 1:
                return RandomBytes(random);
            case 2:
            case 3:
                return RandomStun(random);
            case 4:
                return RandomChannelData(random);
            default:
                // From the legitimate 5-tuple authenticated messages too, the Allocate included (it can only
                // earn 437 there); strangers get unauthenticated ones, so nothing they send can allocate.
                var pool = legitimate ? templates.Legitimate : templates.Unauthenticated;
                var template = pool[random.Next(pool.Length)];
                return random.Next(8) == 0 ? template.ToArray() : Mutate(random, template, pool);
        }
    }

    /// <summary>A TCP stream: fragments of every kind back to back, some of them whole valid messages.</summary>
    private static byte[] NextStream(Random random, Templates templates)
    {
        var stream = new List<byte>();
        var pool = templates.Stream;
        for (int i = 0, n = random.Next(1, 24); i < n; i++)
        {
            stream.AddRange(random.Next(6) switch
            {
                0 => RandomBytes(random),
                1 => RandomStun(random),
                2 => RandomChannelData(random),
                3 => pool[random.Next(pool.Length)],
                _ => Mutate(random, pool[random.Next(pool.Length)], pool),
            });
        }

        return [.. stream];
    }

    private static async Task SendStreamAsync(IPEndPoint server, byte[] stream, Random random)
    {
        using var tcp = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true };
        using var timeout = new CancellationTokenSource(TurnTestClient.Timeout * 2);
        await tcp.ConnectAsync(server, timeout.Token);
        var network = tcp.GetStream();
        try
        {
            for (var offset = 0; offset < stream.Length;)
            {
                var length = Math.Min(stream.Length - offset, random.Next(1, 600));
                await network.WriteAsync(stream.AsMemory(offset, length), timeout.Token);
                offset += length;
            }

            // Half-close, then read until the server closes: it must end every connection, whatever it got.
            tcp.Client.Shutdown(SocketShutdown.Send);
            var sink = new byte[4096];
            while (await network.ReadAsync(sink, timeout.Token) > 0)
            {
            }
        }
        catch (IOException)
        {
            // The server closed first (garbage closes a stream), with our data still in flight: a reset.
        }
    }

    private static async Task BindingBarrierAsync(Socket socket, IPEndPoint server)
    {
        var id = StunTransactionId.NewRandom();
        await socket.SendToAsync(Request(id), SocketFlags.None, server);
        var buffer = new byte[65536];
        using var timeout = new CancellationTokenSource(TurnTestClient.Timeout);
        while (true)
        {
            var result = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
            if (result.ReceivedBytes >= StunConstants.HeaderLength && StunHeader.Read(buffer).TransactionId == id)
            {
                Assert.Equal(StunClass.SuccessResponse, StunHeader.Read(buffer).Class);
                return;
            }
        }
    }

    // ---- generators ----

    private static byte[] RandomBytes(Random random)
    {
        var roll = random.Next(100);
        var length = roll < 80 ? random.Next(0, 200) : roll < 97 ? random.Next(200, 1500) : random.Next(1500, 5000);
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>A STUN-shaped message: a plausible header and TLVs, with lies now and then.</summary>
    private static byte[] RandomStun(Random random)
    {
        var body = new List<byte>();
        for (int i = 0, n = random.Next(0, 10); i < n; i++)
        {
            var type = random.Next(4) == 0 ? (ushort)random.Next(0x10000) : InterestingTypes[random.Next(InterestingTypes.Length)];
            var length = random.Next(4) switch
            {
                0 => 4,
                1 => 8,
                2 => 20,
                _ => random.Next(0, 48),
            };
            var declared = random.Next(10) == 0 ? random.Next(0x10000) : length;
            body.AddRange([(byte)(type >> 8), (byte)type, (byte)(declared >> 8), (byte)declared]);
            var value = new byte[(length + 3) & ~3];
            random.NextBytes(value.AsSpan(0, length));
            body.AddRange(value);
        }

        var message = new byte[StunConstants.HeaderLength + body.Count];
        var method = random.Next(3) == 0 ? (ushort)random.Next(0x1000) : Methods[random.Next(Methods.Length)];
        BinaryPrimitives.WriteUInt16BigEndian(message, StunHeader.ComposeType(method, (StunClass)random.Next(4)));
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(2), random.Next(6) == 0 ? LengthLie(random, body.Count) : (ushort)body.Count);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(4), random.Next(10) == 0 ? (uint)random.Next() : StunConstants.MagicCookie);
        random.NextBytes(message.AsSpan(8, 12));
        body.CopyTo(message, StunConstants.HeaderLength);
        return message;
    }

    private static byte[] RandomChannelData(Random random)
    {
        var data = new byte[random.Next(0, 400)];
        random.NextBytes(data);
        var frame = new byte[4 + data.Length + random.Next(0, 4)];
        var channel = random.Next(3) switch
        {
            0 => Channel,
            1 => (ushort)random.Next(0x4000, 0x8000),
            _ => (ushort)random.Next(0x10000),
        };
        BinaryPrimitives.WriteUInt16BigEndian(frame, channel);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(2), random.Next(4) == 0 ? LengthLie(random, data.Length) : (ushort)data.Length);
        data.CopyTo(frame, 4);
        return frame;
    }

    private static ushort LengthLie(Random random, int actual) => random.Next(6) switch
    {
        0 => 0,
        1 => (ushort)Math.Max(0, actual - 4),
        2 => (ushort)(actual + 4),
        3 => 0xFFFC,
        4 => (ushort)(actual + 1),
        _ => (ushort)random.Next(0x10000),
    };

    /// <summary>Bit flips, truncations, header and attribute length lies, insertions, splices, overwrites.</summary>
    private static byte[] Mutate(Random random, byte[] template, byte[][] pool)
    {
        var message = template.ToArray();
        switch (random.Next(8))
        {
            case 0:
                for (int i = 0, n = random.Next(1, 9); i < n && message.Length > 0; i++)
                {
                    message[random.Next(message.Length)] ^= (byte)(1 << random.Next(8));
                }

                return message;
            case 1:
                return message[..random.Next(message.Length)];
            case 2:
                if (message.Length >= 4)
                {
                    BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(2), LengthLie(random, message.Length - StunConstants.HeaderLength));
                }

                return message;
            case 3:
                var attributes = AttributeOffsets(message);
                if (attributes.Count > 0)
                {
                    var offset = attributes[random.Next(attributes.Count)];
                    var length = BinaryPrimitives.ReadUInt16BigEndian(message.AsSpan(offset + 2));
                    BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(offset + 2), LengthLie(random, length));
                }

                return message;
            case 4:
                // Cut at an attribute boundary and make the header agree: a consistent, shorter message.
                var boundaries = AttributeOffsets(message);
                if (boundaries.Count > 0)
                {
                    var cut = boundaries[random.Next(boundaries.Count)];
                    message = message[..cut];
                    BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(2), (ushort)(cut - StunConstants.HeaderLength));
                }

                return message;
            case 5:
                var insert = new byte[random.Next(1, 16)];
                random.NextBytes(insert);
                var at = random.Next(message.Length + 1);
                return [.. message[..at], .. insert, .. message[at..]];
            case 6:
                var other = pool[random.Next(pool.Length)];
                return [.. message[..random.Next(message.Length + 1)], .. other[random.Next(other.Length + 1)..]];
            default:
                if (message.Length > 0)
                {
                    var start = random.Next(message.Length);
                    random.NextBytes(message.AsSpan(start, Math.Min(message.Length - start, random.Next(1, 12))));
                }

                return message;
        }
    }

    /// <summary>Where each attribute of a STUN message starts, as far as the lengths can be trusted.</summary>
    private static List<int> AttributeOffsets(byte[] message)
    {
        var offsets = new List<int>();
        if (message.Length < StunConstants.HeaderLength || (message[0] & 0xC0) != 0)
        {
            return offsets;
        }

        for (var offset = StunConstants.HeaderLength; offset + 4 <= message.Length;)
        {
            offsets.Add(offset);
            offset += 4 + ((BinaryPrimitives.ReadUInt16BigEndian(message.AsSpan(offset + 2)) + 3) & ~3);
        }

        return offsets;
    }

    private static int OpenDescriptors() => Directory.GetFileSystemEntries("/proc/self/fd").Length;

    /// <summary>The server's own gauge of open STUN/TURN TCP connections, read from its Prometheus output.</summary>
    private static long OpenTcpConnections(RelayTestServer server)
    {
        var match = TcpGauge().Match(server.Services.GetRequiredService<PrometheusMetricsWriter>().Write());
        Assert.True(match.Success, "relay_stun_connections{transport=\"tcp\"} missing from the metrics");
        return long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    [GeneratedRegex("^relay_stun_connections\\{transport=\"tcp\"\\} (\\d+)$", RegexOptions.Multiline)]
    private static partial Regex TcpGauge();

    private sealed record Templates(byte[][] Authenticated, byte[][] Unauthenticated, byte[] AuthenticatedAllocate)
    {
        /// <summary>What the legitimate 5-tuple sends: everything, its own Allocate included.</summary>
        public byte[][] Legitimate { get; } = [.. Authenticated, AuthenticatedAllocate, .. Unauthenticated];

        /// <summary>What TCP streams carry: everything but an authenticated Allocate.</summary>
        public byte[][] Stream { get; } = [.. Authenticated, .. Unauthenticated];
    }
}
