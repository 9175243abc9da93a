using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Stun;
using Relay.Server.Turn;
using static Relay.Server.Tests.StunTestClient;
using static Relay.Server.Tests.Turn.TurnTestClient;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// RFC 8656 (TURN) and RFC 8489 §9.2 (long-term credentials) conformance over real loopback sockets: each
/// error code where the RFC puts it, success responses signed with the request's key and fingerprinted,
/// and the relay paths end to end. Every wait is for an event (a datagram, a frame, a counter), bounded.
/// </summary>
public sealed class TurnProtocolTests
{
    private const string Alice = "alice";
    private const string AlicePassword = "alice-secret";
    private const string Bob = "bob";
    private const string BobPassword = "bob-secret";

    private static readonly string[] Users = [$"Relay:Turn:Users:0={Alice}:{AlicePassword}", $"Relay:Turn:Users:1={Bob}:{BobPassword}"];

    /// <summary>Loopback peers are allowed unless a test is about the peer policy.</summary>
    private static string[] Settings(params string[] more) => [.. Users, "Relay:Turn:AllowLoopbackPeers=true", .. more];

    // ---------------------------------------------------------------- RFC 8489 §9.2.4, long-term credentials

    [Fact]
    public async Task Rfc8489_9_2_4_RequestWithoutIntegrity_Gets401_WithRealmNonceAndPasswordAlgorithms()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);

        var challenge = await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport, authenticate: false));

        AssertError(challenge, 401);
        Assert.Equal("relay", challenge.Realm);
        Assert.NotNull(challenge.Nonce);

        // RFC 8489 §9.2: the nonce cookie with the "Password algorithms" feature bit, and the list it announces,
        // most preferred first (§14.11): SHA-256, then MD5, each with no parameters.
        Assert.StartsWith("obMatJos2gAAA", Encoding.ASCII.GetString(challenge.Nonce));
        Assert.Equal(AlgorithmList(StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5), challenge.PasswordAlgorithms);
        Assert.False(challenge.HasIntegrity, "a 401 challenge cannot be signed");
        Assert.False(challenge.Has(StunAttributeType.Username));
        Assert.True(challenge.FingerprintValid);
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Fact]
    public async Task Rfc8489_9_2_4_WrongPasswordOrUnknownUser_Gets401_WithAFreshChallenge_AndAllocatesNothing()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, "not-the-password");
        await client.ChallengeAsync();

        var refused = await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport));
        AssertError(refused, 401);
        Assert.NotNull(refused.Realm);
        Assert.NotNull(refused.Nonce);
        Assert.False(refused.HasIntegrity, "RFC 8489 §9.2.4: the 401 for a wrong MESSAGE-INTEGRITY SHOULD NOT be signed");

        client.Username = "mallory";
        AssertError(await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport)), 401);
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Theory]
    [InlineData("USERNAME")]
    [InlineData("REALM")]
    [InlineData("NONCE")]
    public async Task Rfc8489_9_2_4_IntegrityWithoutUsernameRealmOrNonce_Gets400_Unsigned(string missing)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        await client.ChallengeAsync();

        var response = await client.RequestAsync(client.Build(StunMethod.Allocate, (ref StunMessageWriter w) =>
        {
            UdpTransport(ref w);
            client.WriteCredentials(ref w, username: missing != "USERNAME", realm: missing != "REALM", nonce: missing != "NONCE");
        }, authenticate: false));

        AssertError(response, 400);

        // "The response cannot contain a MESSAGE-INTEGRITY ... SHOULD NOT include a USERNAME, USERHASH, NONCE, or REALM."
        Assert.False(response.HasIntegrity);
        Assert.False(response.Has(StunAttributeType.Realm));
        Assert.False(response.Has(StunAttributeType.Nonce));
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Theory]
    [InlineData("last MAC character changed")]
    [InlineData("truncated")]
    [InlineData("another server's cookie")]
    public async Task Rfc8489_9_2_4_NonceThatIsNotOurs_Gets438_WithAValidFreshNonce(string mutation)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        await client.ChallengeAsync();
        var nonce = client.Nonce!.ToArray();
        client.Nonce = mutation switch
        {
            "last MAC character changed" => [.. nonce[..^1], (byte)(nonce[^1] == (byte)'A' ? 'B' : 'A')],
            "truncated" => nonce[..^4],
            _ => [.. "obMatJos2AAAA"u8, .. nonce[13..]],
        };

        var stale = await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport));

        AssertStaleNonce(stale, client.Nonce);
        client.Learn(stale);
        AssertSuccess(await client.SendAuthenticatedAsync(StunMethod.Allocate, UdpTransport));
    }

    [Fact]
    public async Task Rfc8489_9_2_4_ExpiredNonce_Gets438_AndTheFreshNonceWorks()
    {
        // The nonce service reads the TimeProvider from DI; the test moves it by hand, never sleeping.
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var server = await RelayTestServer.StartAsync(services => services.AddSingleton<TimeProvider>(clock), Settings("Relay:Turn:NonceLifetimeSeconds=600"));
        await using var client = Udp(server, Alice, AlicePassword);
        await client.AllocateAsync();
        var nonce = client.Nonce!;

        clock.Advance(TimeSpan.FromSeconds(599));
        AssertSuccess(await client.RequestAsync(client.Build(StunMethod.Refresh)));

        clock.Advance(TimeSpan.FromSeconds(2));
        var stale = await client.RequestAsync(client.Build(StunMethod.Refresh));
        AssertStaleNonce(stale, nonce);

        // RFC 8489 §9.2.5: the client retries with the new NONCE; the allocation is untouched meanwhile.
        client.Learn(stale);
        var refreshed = await client.RequestAsync(client.Build(StunMethod.Refresh));
        AssertSuccess(refreshed);
        client.AssertSigned(refreshed);
        Assert.Equal(1, Relay(server).AllocationCount);
    }

    [Fact]
    public async Task Rfc8489_9_2_4_ChecksRunInTheOrderSpecified_AlgorithmsThenIntegrityThenNonce()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var server = await RelayTestServer.StartAsync(services => services.AddSingleton<TimeProvider>(clock), Settings("Relay:Turn:NonceLifetimeSeconds=60"));
        await using var client = Udp(server, Alice, AlicePassword);
        await client.ChallengeAsync();
        clock.Advance(TimeSpan.FromSeconds(61));

        // "performs the checks listed below in the order specified": with an expired NONCE, a mismatched
        // PASSWORD-ALGORITHMS is still 400 and a wrong password still 401; only a request that passes
        // both learns that its NONCE is stale.
        client.Algorithm = StunPasswordAlgorithm.Sha256;
        client.EchoedAlgorithmsOverride = AlgorithmList(StunPasswordAlgorithm.Sha256);
        AssertError(await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport)), 400);
        client.EchoedAlgorithmsOverride = null;

        client.Password = "wrong";
        AssertError(await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport)), 401);

        client.Password = AlicePassword;
        var stale = await client.RequestAsync(client.Build(StunMethod.Allocate, UdpTransport));
        AssertStaleNonce(stale, client.Nonce!);
        client.Learn(stale);
        AssertSuccess(await client.SendAuthenticatedAsync(StunMethod.Allocate, UdpTransport));
    }

    [Fact]
    public async Task Rfc8489_9_2_4_Sha256_EchoedPasswordAlgorithms_AndMessageIntegritySha256_Succeed_AndResponsesAreSignedSo()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        client.Algorithm = StunPasswordAlgorithm.Sha256;
        using var peer = PeerSocket();

        var allocated = await client.AllocateAsync();

        // RFC 8489 §9.2.4: "Any response ... MUST include the MESSAGE-INTEGRITY-SHA256 attribute" (SHA-256 key).
        Assert.True(allocated.HasIntegritySha256);
        Assert.False(allocated.HasIntegritySha1);
        Assert.True(allocated.VerifyIntegrity(client.Key));
        await client.CreatePermissionAsync(Endpoint(peer));
        await client.ChannelBindAsync(0x4000, Endpoint(peer));
        AssertSuccess(await client.SendAuthenticatedAsync(StunMethod.Refresh));
    }

    [Theory]
    [InlineData("list reordered")]
    [InlineData("list shortened")]
    [InlineData("no PASSWORD-ALGORITHMS")]
    [InlineData("no PASSWORD-ALGORITHM")]
    public async Task Rfc8489_9_2_4_PasswordAlgorithmsNotAsOffered_Gets400(string mismatch)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        client.Algorithm = StunPasswordAlgorithm.Sha256;
        await client.ChallengeAsync();
        client.EchoedAlgorithmsOverride = mismatch switch
        {
            "list reordered" => AlgorithmList(StunPasswordAlgorithm.Md5, StunPasswordAlgorithm.Sha256),
            "list shortened" => AlgorithmList(StunPasswordAlgorithm.Sha256),
            _ => null,
        };

        var response = await client.RequestAsync(client.Build(StunMethod.Allocate, (ref StunMessageWriter w) =>
        {
            UdpTransport(ref w);
            client.WriteCredentials(ref w, algorithms: mismatch != "no PASSWORD-ALGORITHMS", algorithm: mismatch != "no PASSWORD-ALGORITHM");
        }, authenticate: false));

        AssertError(response, 400);
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Fact]
    public async Task Rfc8489_6_3_UnknownComprehensionRequiredAttributes_Get420_WithUnknownAttributes_AfterAuthentication()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        AttributeWriter withUnknown = (ref StunMessageWriter w) =>
        {
            UdpTransport(ref w);
            w.WriteAttribute((ushort)0x7F01, [1, 2, 3, 4]);
            w.WriteAttribute((ushort)0x0050, []);
            w.WriteAttribute((ushort)0xC0DE, [5]);
        };

        // RFC 8489 §6.3: unknown attributes are looked for "once the authentication checks are done".
        var challenge = await client.RequestAsync(client.Build(StunMethod.Allocate, withUnknown, authenticate: false));
        AssertError(challenge, 401);
        client.Learn(challenge);

        // §6.3.1: 420 listing the comprehension-required ones only (0xC0DE is comprehension-optional), signed
        // (SendAuthenticatedAsync checks MESSAGE-INTEGRITY and FINGERPRINT).
        var response = await client.SendAuthenticatedAsync(StunMethod.Allocate, withUnknown);
        AssertError(response, 420);
        Assert.Equal(new ushort[] { 0x7F01, 0x0050 }, response.UnknownAttributes);
        Assert.Equal(0, Relay(server).AllocationCount);

        await client.AllocateAsync((ref StunMessageWriter w) => w.WriteAttribute((ushort)0xC0DE, [5]));
    }

    // ---------------------------------------------------------------- RFC 8656 §5 and §7.2, Allocate

    [Fact]
    public async Task Rfc8656_7_2_RetransmittedAllocate_GetsTheSameSuccess_ButANewTransactionGets437()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        await client.ChallengeAsync();
        var request = client.Build(StunMethod.Allocate, UdpTransport);

        var first = await client.RequestAsync(request);
        var retransmitted = await client.RequestAsync(request);

        AssertSuccess(first);
        AssertSuccess(retransmitted);
        client.AssertSigned(first);
        client.AssertSigned(retransmitted);
        Assert.Equal(first.XorRelayed, retransmitted.XorRelayed);
        Assert.Equal(first.XorMapped, retransmitted.XorMapped);
        Assert.Equal(client.Local, first.XorMapped);
        Assert.Equal(1, Relay(server).AllocationCount);
        Assert.Equal(1, Metrics(server).AllocationsCreated);

        // §7.2 step 2: "If the 5-tuple is currently in use by an existing allocation ... 437".
        AssertError(await client.SendAuthenticatedAsync(StunMethod.Allocate, UdpTransport), 437);
        Assert.Equal(1, Relay(server).AllocationCount);
    }

    [Theory]
    [InlineData(StunMethod.Refresh)]
    [InlineData(StunMethod.CreatePermission)]
    [InlineData(StunMethod.ChannelBind)]
    public async Task Rfc8656_5_RequestOtherThanAllocate_WithoutAnAllocation_Gets437(StunMethod method)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        using var peer = PeerSocket();

        var response = await client.SendAuthenticatedAsync(method, (ref StunMessageWriter w) =>
        {
            if (method == StunMethod.ChannelBind)
            {
                WriteChannelNumber(ref w, 0x4000);
            }

            if (method != StunMethod.Refresh)
            {
                WritePeer(ref w, Endpoint(peer));
            }
        });

        AssertError(response, 437);
    }

    [Theory]
    [InlineData(132, 442)] // SCTP: no relay of that kind (RFC 8656 §7.2).
    [InlineData(6, 400)]   // TCP asked for over UDP: RFC 6062 §5.1 item 2, "client connection transport is not TCP or TLS".
    public async Task Rfc8656_7_2_RequestedTransportOtherThanUdp_OverUdp_IsRefused(byte protocol, int code)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);

        AssertError(await client.SendAuthenticatedAsync(StunMethod.Allocate, RequestedTransport(protocol)), code);
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Fact]
    public async Task Rfc8656_7_2_AllocateWithoutRequestedTransport_Gets400_Signed()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);

        var response = await client.SendAuthenticatedAsync(StunMethod.Allocate);

        AssertError(response, 400);
        client.AssertSigned(response);
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Fact]
    public async Task Rfc8656_7_2_RequestedAddressFamily_NotConfiguredOrUnknown_Gets440()
    {
        // Only an IPv4 relay address: IPv6 relayed addresses are "not supported" (§7.2 step 7).
        await using var server = await RelayTestServer.StartAsync(Settings("Relay:Turn:RelayAddresses:0=127.0.0.1"));
        await using var client = Udp(server, Alice, AlicePassword);

        foreach (var family in new byte[] { StunAddress.FamilyIPv6, 0x03 })
        {
            var response = await client.SendAuthenticatedAsync(StunMethod.Allocate, (ref StunMessageWriter w) =>
            {
                UdpTransport(ref w);
                WriteFamily(ref w, StunAttributeType.RequestedAddressFamily, family);
            });
            AssertError(response, 440);
        }

        Assert.Equal(0, Relay(server).AllocationCount);
        var allocated = await client.AllocateAsync((ref StunMessageWriter w) => WriteFamily(ref w, StunAttributeType.RequestedAddressFamily, StunAddress.FamilyIPv4));
        Assert.Equal(IPAddress.Loopback, allocated.XorRelayed!.Address);
    }

    [Theory]
    [InlineData("REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY")] // §7.2 step 6
    [InlineData("ADDITIONAL-ADDRESS-FAMILY IPv4")] // §7.2 step 9
    [InlineData("EVEN-PORT R=1 with ADDITIONAL-ADDRESS-FAMILY")] // §7.2 step 8
    [InlineData("RESERVATION-TOKEN with EVEN-PORT")] // §7.2 step 5
    public async Task Rfc8656_7_2_ContradictoryAllocateAttributes_Get400(string combination)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);

        var response = await client.SendAuthenticatedAsync(StunMethod.Allocate, (ref StunMessageWriter w) =>
        {
            UdpTransport(ref w);
            switch (combination)
            {
                case "REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY":
                    WriteFamily(ref w, StunAttributeType.RequestedAddressFamily, StunAddress.FamilyIPv4);
                    WriteFamily(ref w, StunAttributeType.AdditionalAddressFamily, StunAddress.FamilyIPv6);
                    break;
                case "ADDITIONAL-ADDRESS-FAMILY IPv4":
                    WriteFamily(ref w, StunAttributeType.AdditionalAddressFamily, StunAddress.FamilyIPv4);
                    break;
                case "EVEN-PORT R=1 with ADDITIONAL-ADDRESS-FAMILY":
                    w.WriteAttribute(StunAttributeType.EvenPort, [0x80]);
                    WriteFamily(ref w, StunAttributeType.AdditionalAddressFamily, StunAddress.FamilyIPv6);
                    break;
                default:
                    w.WriteAttribute(StunAttributeType.ReservationToken, [1, 2, 3, 4, 5, 6, 7, 8]);
                    w.WriteAttribute(StunAttributeType.EvenPort, [0x00]);
                    break;
            }
        });

        AssertError(response, 400);
        Assert.Equal(0, Relay(server).AllocationCount);
    }

    [Fact]
    public async Task Rfc8656_7_2_ServerQuotaExhausted_SecondClientGets486_AndTheLimitHitIsCounted()
    {
        await using var server = await RelayTestServer.StartAsync(Settings("Relay:Turn:MaxAllocations=1"));
        await using var first = Udp(server, Alice, AlicePassword);
        await using var second = Udp(server, Bob, BobPassword);
        await first.AllocateAsync();

        AssertError(await second.SendAuthenticatedAsync(StunMethod.Allocate, UdpTransport), 486);
        Assert.Equal(1, Metrics(server).LimitHits(TurnLimit.Allocations));
        Assert.Equal(1, Relay(server).AllocationCount);

        // Deleting the first allocation gives its quota back.
        AssertSuccess(await first.SendAuthenticatedAsync(StunMethod.Refresh, Lifetime(0)));
        await second.AllocateAsync();
    }

    [Fact]
    public async Task Rfc8656_7_2_RelayPortRangeExhausted_Gets508_AndTheLimitHitIsCounted()
    {
        using var holder = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        holder.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)holder.LocalEndPoint!).Port;
        await using var server = await RelayTestServer.StartAsync(Settings(
            "Relay:Turn:RelayAddresses:0=127.0.0.1", $"Relay:Turn:RelayPortMin={port}", $"Relay:Turn:RelayPortMax={port}"));
        await using var client = Udp(server, Alice, AlicePassword);

        AssertError(await client.SendAuthenticatedAsync(StunMethod.Allocate, UdpTransport), 508);
        Assert.Equal(1, Metrics(server).LimitHits(TurnLimit.RelayPorts));
        Assert.Equal(0, Relay(server).AllocationCount);

        // The refused request gave its quota back, and the port serves once it is free.
        holder.Dispose();
        var allocated = await client.AllocateAsync();
        Assert.Equal(port, allocated.XorRelayed!.Port);
    }

    // ---------------------------------------------------------------- RFC 8656 §8.2, Refresh and lifetimes

    [Fact]
    public async Task Rfc8656_8_2_RefreshWithLifetimeZero_DeletesTheAllocation_AndReleasesTheRelayPort()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        var relayed = (await client.AllocateAsync()).XorRelayed!;
        Assert.False(CanBind(relayed), "the relayed port should be held by the allocation");

        var deleted = await client.SendAuthenticatedAsync(StunMethod.Refresh, Lifetime(0));

        AssertSuccess(deleted);
        Assert.Equal(0u, deleted.Lifetime);
        Assert.Equal(0, Relay(server).AllocationCount);
        Assert.Equal(0, Metrics(server).Allocations);

        // The socket is closed on its relay loop's thread, so wait for that event, not for a time.
        await Poll.UntilAsync(() => CanBind(relayed), $"relay port {relayed.Port} to be released");

        // §8.3: a 437 to a repeated delete means the allocation is gone.
        AssertError(await client.SendAuthenticatedAsync(StunMethod.Refresh, Lifetime(0)), 437);
    }

    [Fact]
    public async Task Rfc8656_7_2_And_8_2_Lifetime_IsClampedToTheMaximum_AndRaisedToTheDefault()
    {
        await using var server = await RelayTestServer.StartAsync(Settings("Relay:Turn:MaxLifetimeSeconds=900"));
        await using var client = Udp(server, Alice, AlicePassword);

        Assert.Equal(900u, (await client.AllocateAsync(Lifetime(100_000))).Lifetime);
        Assert.Equal(900u, (await client.SendAuthenticatedAsync(StunMethod.Refresh, Lifetime(uint.MaxValue))).Lifetime);
        Assert.Equal(600u, (await client.SendAuthenticatedAsync(StunMethod.Refresh, Lifetime(30))).Lifetime);
        Assert.Equal(600u, (await client.SendAuthenticatedAsync(StunMethod.Refresh)).Lifetime);
    }

    [Fact]
    public async Task Rfc8656_8_2_RefreshAskingForAnotherAddressFamily_Gets443()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        await client.AllocateAsync();

        var response = await client.SendAuthenticatedAsync(StunMethod.Refresh, (ref StunMessageWriter w) => WriteFamily(ref w, StunAttributeType.RequestedAddressFamily, StunAddress.FamilyIPv6));

        AssertError(response, 443);
        Assert.Equal(1, Relay(server).AllocationCount);
    }

    // ---------------------------------------------------------------- RFC 8656 §5, 441

    [Fact]
    public async Task Rfc8656_5_AnotherValidUser_OnSomeoneElsesAllocation_Gets441_OnlyOnceAuthenticated()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        using var peer = PeerSocket();
        await client.AllocateAsync();

        // Bob on Alice's 5-tuple, with his own valid credentials: 441, signed with Bob's key.
        client.Username = Bob;
        client.Password = BobPassword;
        AssertError(await client.SendAuthenticatedAsync(StunMethod.Refresh), 441);
        AssertError(await client.SendAuthenticatedAsync(StunMethod.CreatePermission, (ref StunMessageWriter w) => WritePeer(ref w, Endpoint(peer))), 441);

        // An Allocate on a 5-tuple in use is 437 whoever sends it (§7.2 step 2).
        AssertError(await client.SendAuthenticatedAsync(StunMethod.Allocate, UdpTransport), 437);

        // Without valid credentials it is not 441 ("a non-Allocate request passes authentication"): 401.
        client.Password = "guess";
        AssertError(await client.RequestAsync(client.Build(StunMethod.Refresh)), 401);

        client.Username = Alice;
        client.Password = AlicePassword;
        AssertSuccess(await client.SendAuthenticatedAsync(StunMethod.Refresh));
        Assert.Equal(0, Relay(server).Find(client.FiveTuple)!.PermissionCount);
    }

    // ---------------------------------------------------------------- RFC 8656 §10.2 and §12.2, peers

    [Theory]
    [InlineData(StunMethod.CreatePermission)]
    [InlineData(StunMethod.ChannelBind)]
    public async Task Rfc8656_10_2_And_12_2_IPv6PeerOnAnIPv4Allocation_Gets443(StunMethod method)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        await client.AllocateAsync();

        var response = await client.SendAuthenticatedAsync(method, (ref StunMessageWriter w) =>
        {
            if (method == StunMethod.ChannelBind)
            {
                WriteChannelNumber(ref w, 0x4000);
            }

            WriteIPv6Peer(ref w, IPAddress.Parse("2001:db8::1"), 3000);
        });

        AssertError(response, 443);
        Assert.Equal(0, Relay(server).Find(client.FiveTuple)!.PermissionCount);
    }

    public static TheoryData<string, StunMethod> DeniedPeers()
    {
        var data = new TheoryData<string, StunMethod>();
        foreach (var peer in new[] { "10.0.0.1", "127.0.0.1", "169.254.169.254", "0.0.0.0", "::ffff:127.0.0.1", "::1", "::ffff:10.0.0.1" })
        {
            data.Add(peer, StunMethod.CreatePermission);
            data.Add(peer, StunMethod.ChannelBind);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(DeniedPeers))]
    public async Task Rfc8656_10_2_And_12_2_DeniedPeer_Gets403(string peer, StunMethod method)
    {
        // No AllowLoopbackPeers here: loopback is denied like any private range (coturn CVE-2020-26262).
        await using var server = await RelayTestServer.StartAsync(Users);
        await using var client = Udp(server, Alice, AlicePassword);
        var address = IPAddress.Parse(peer);
        var ipv6 = address.AddressFamily == AddressFamily.InterNetworkV6;

        // An IPv6 peer needs an IPv6 allocation, or the answer is 443 before the policy is asked.
        await client.AllocateAsync(ipv6 ? (ref StunMessageWriter w) => WriteFamily(ref w, StunAttributeType.RequestedAddressFamily, StunAddress.FamilyIPv6) : null);

        var response = await client.SendAuthenticatedAsync(method, (ref StunMessageWriter w) =>
        {
            if (method == StunMethod.ChannelBind)
            {
                WriteChannelNumber(ref w, 0x4000);
            }

            if (ipv6)
            {
                WriteIPv6Peer(ref w, address, 3478);
            }
            else
            {
                WritePeer(ref w, new IPEndPoint(address, 3478));
            }
        });

        AssertError(response, 403);
        Assert.Equal(0, Relay(server).Find(client.FiveTuple)!.PermissionCount);
        Assert.Equal(0, Relay(server).Find(client.FiveTuple)!.ChannelCount);
    }

    [Fact]
    public async Task Rfc8656_10_2_CreatePermission_IsAllOrNothing_WhenOnePeerIsDenied()
    {
        await using var server = await RelayTestServer.StartAsync(Users);
        await using var client = Udp(server, Alice, AlicePassword);
        await client.AllocateAsync();

        var response = await client.SendAuthenticatedAsync(StunMethod.CreatePermission, (ref StunMessageWriter w) =>
        {
            WritePeer(ref w, new IPEndPoint(IPAddress.Parse("198.51.100.7"), 4000));
            WritePeer(ref w, new IPEndPoint(IPAddress.Parse("10.0.0.1"), 4000));
        });

        AssertError(response, 403);
        Assert.Equal(0, Relay(server).Find(client.FiveTuple)!.PermissionCount);
    }

    [Theory]
    [InlineData((ushort)0x3FFF)]
    [InlineData((ushort)0x8000)]
    [InlineData((ushort)0xFFFF)]
    [InlineData((ushort)0x0000)]
    public async Task Rfc8656_12_2_ChannelNumberOutOfRange_Gets400(ushort channel)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        using var peer = PeerSocket();
        await client.AllocateAsync();

        AssertError(await ChannelBindAsync(client, channel, Endpoint(peer)), 400);
        Assert.Equal(0, Relay(server).Find(client.FiveTuple)!.ChannelCount);
    }

    [Fact]
    public async Task Rfc8656_12_2_Rfc5766ChannelNumbers_Get400_WhenNotAccepted()
    {
        await using var server = await RelayTestServer.StartAsync(Settings("Relay:Turn:AcceptRfc5766ChannelNumbers=false"));
        await using var client = Udp(server, Alice, AlicePassword);
        using var peer = PeerSocket();
        await client.AllocateAsync();

        AssertError(await ChannelBindAsync(client, 0x5000, Endpoint(peer)), 400);
        AssertSuccess(await ChannelBindAsync(client, 0x4FFF, Endpoint(peer)));
    }

    [Fact]
    public async Task Rfc8656_12_2_RebindingAChannelOrAPeer_Gets400_ButRefreshingTheSameBindingSucceeds()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);
        using var peerA = PeerSocket();
        using var peerB = PeerSocket();
        await client.AllocateAsync();
        await client.ChannelBindAsync(0x4000, Endpoint(peerA));

        AssertError(await ChannelBindAsync(client, 0x4000, Endpoint(peerB)), 400);
        AssertError(await ChannelBindAsync(client, 0x4001, Endpoint(peerA)), 400);
        AssertSuccess(await ChannelBindAsync(client, 0x4000, Endpoint(peerA)));
        Assert.Equal(1, Relay(server).Find(client.FiveTuple)!.ChannelCount);
    }

    // ---------------------------------------------------------------- RFC 8656 §9, §11, §12, data paths

    [Theory]
    [InlineData("udp")]
    [InlineData("tcp")]
    public async Task Rfc8656_11_And_12_SendDataIndications_ThenChannelData_RelayBothWays(string transport)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = await ConnectAsync(server, transport);
        using var peer = PeerSocket();
        var relayed = (await client.AllocateAsync()).XorRelayed!;

        // §11.2: a Send indication to a permitted peer leaves from the relayed transport address.
        await client.CreatePermissionAsync(Endpoint(peer));
        await client.SendIndicationAsync(Endpoint(peer), "hello peer"u8.ToArray());
        var (data, from) = await PeerReceiveAsync(peer);
        Assert.Equal("hello peer"u8.ToArray(), data);
        Assert.Equal(relayed, from);

        // §11.3: the peer's reply comes back as a Data indication with XOR-PEER-ADDRESS and DATA.
        await peer.SendToAsync("hello client"u8.ToArray(), relayed);
        var indication = await client.ReceiveDataAsync();
        Assert.NotNull(indication.Message);
        Assert.Equal((ushort)StunMethod.Data, indication.Message.Method);
        Assert.Equal(StunClass.Indication, indication.Message.Class);
        Assert.Equal(Endpoint(peer), indication.Message.XorPeer);
        Assert.Equal("hello client"u8.ToArray(), indication.Data);

        // §12: once bound, ChannelData both ways. Over TCP every ChannelData is padded to 4 (§12.5).
        await client.ChannelBindAsync(0x4001, Endpoint(peer));
        byte[] odd = [1, 2, 3, 4, 5];
        await client.SendChannelDataAsync(0x4001, odd);
        (data, from) = await PeerReceiveAsync(peer);
        Assert.Equal(odd, data);
        Assert.Equal(relayed, from);

        await peer.SendToAsync(odd, relayed);
        await peer.SendToAsync(new byte[] { 9, 8 }, relayed);
        var first = await client.ReceiveDataAsync();
        var second = await client.ReceiveDataAsync();
        Assert.True(first.IsChannelData && second.IsChannelData, "after ChannelBind the server must use ChannelData (§12.7)");
        Assert.Equal(0x4001, first.Channel);
        Assert.Equal(odd, first.Data);
        Assert.Equal(new byte[] { 9, 8 }, second.Data);
        if (client.IsStream)
        {
            Assert.Equal(12, first.Raw.Length);
            Assert.Equal(new byte[3], first.Raw[9..]);
            Assert.Equal(8, second.Raw.Length);

            // Two padded messages in one write: the server must frame the second after the first's padding.
            await client.SendRawAsync([.. ChannelData(0x4001, [7], pad: true), .. ChannelData(0x4001, [6, 6, 6], pad: true)]);
            Assert.Equal(new byte[] { 7 }, (await PeerReceiveAsync(peer)).Data);
            Assert.Equal(new byte[] { 6, 6, 6 }, (await PeerReceiveAsync(peer)).Data);
        }

        Assert.Equal(0, Metrics(server).Drops(TurnDropReason.NoPermission));
    }

    [Theory]
    [InlineData("udp")]
    [InlineData("tcp")]
    public async Task Rfc8656_9_DataFromAPeerWithoutPermission_IsDroppedAndCounted_WhilePermissionsIgnorePorts(string transport)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = await ConnectAsync(server, transport);
        using var peer = PeerSocket();
        using var intruder = PeerSocket("127.0.0.2");
        var relayed = (await client.AllocateAsync()).XorRelayed!;
        await client.CreatePermissionAsync(Endpoint(peer));
        var metrics = Metrics(server);

        // §9: a datagram from an address without a permission is silently discarded.
        await intruder.SendToAsync("let me in"u8.ToArray(), relayed);
        await Poll.UntilAsync(() => metrics.Drops(TurnDropReason.NoPermission) == 1, "the intruder's datagram to be dropped");

        // §11.2: a Send indication to an address without a permission is discarded too.
        await client.SendIndicationAsync(Endpoint(intruder), "not for you"u8.ToArray());
        await Poll.UntilAsync(() => metrics.Drops(TurnDropReason.NoPermission) == 2, "the Send indication to be dropped");

        // §9: "only addresses are compared and port numbers are not considered": another port of the
        // permitted address gets through, and it is the first thing the client receives.
        using var samePeerHost = PeerSocket();
        await samePeerHost.SendToAsync("same host"u8.ToArray(), relayed);
        var frame = await client.ReceiveDataAsync();
        Assert.Equal("same host"u8.ToArray(), frame.Data);
        Assert.Equal(Endpoint(samePeerHost), frame.Message!.XorPeer);
    }

    [Fact]
    public async Task Tcp_ClosingTheConnection_DeletesItsAllocation()
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        var client = await TcpAsync(server, Alice, AlicePassword);
        await client.AllocateAsync();
        Assert.Equal(1, Relay(server).AllocationCount);

        await client.DisposeAsync();

        await Poll.UntilAsync(() => Relay(server).AllocationCount == 0, "the TCP allocation to go with its connection");
        Assert.Equal(0, Metrics(server).Allocations);
    }

    // ---------------------------------------------------------------- helpers

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Rfc8656_7_2_DontFragment_IsHonouredOnTheRelaySocket(bool ipv6)
    {
        await using var server = await RelayTestServer.StartAsync(Settings());
        await using var client = Udp(server, Alice, AlicePassword);

        // Step 4 / §14.8: the server sets DF on what it relays, rather than treating the attribute as unknown.
        await client.AllocateAsync((ref StunMessageWriter w) =>
        {
            w.BeginAttribute((ushort)StunAttributeType.DontFragment, 0);
            if (ipv6)
            {
                WriteFamily(ref w, StunAttributeType.RequestedAddressFamily, StunAddress.FamilyIPv6);
            }
        });

        var socket = Relay(server).Find(client.FiveTuple)!.RelaySocket;
        Assert.Equal(ipv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork, socket.AddressFamily);
        // IPPROTO_IPV6/IPV6_DONTFRAG is 1 when set; IPPROTO_IP/IP_MTU_DISCOVER is IP_PMTUDISC_DO (2).
        var value = BitConverter.ToInt32(ipv6 ? RawOption(socket, 41, 62) : RawOption(socket, 0, 10));
        Assert.Equal(ipv6 ? 1 : 2, value);
    }

    private static byte[] RawOption(Socket socket, int level, int name)
    {
        var value = new byte[4];
        socket.GetRawSocketOption(level, name, value);
        return value;
    }

    private static TurnRelay Relay(RelayTestServer server) => server.Services.GetRequiredService<TurnRelay>();

    private static TurnMetrics Metrics(RelayTestServer server) => server.Services.GetRequiredService<TurnMetrics>();

    private static async Task<TurnTestClient> ConnectAsync(RelayTestServer server, string transport) =>
        transport == "tcp" ? await TcpAsync(server, Alice, AlicePassword) : Udp(server, Alice, AlicePassword);

    private static AttributeWriter Lifetime(uint seconds) => (ref StunMessageWriter w) => w.WriteUInt32(StunAttributeType.Lifetime, seconds);

    private static Task<TurnMessage> ChannelBindAsync(TurnTestClient client, ushort channel, IPEndPoint peer) =>
        client.SendAuthenticatedAsync(StunMethod.ChannelBind, (ref StunMessageWriter w) =>
        {
            WriteChannelNumber(ref w, channel);
            WritePeer(ref w, peer);
        });

    /// <summary>RFC 8489 §9.2.4: 438 with a fresh, valid NONCE, REALM and PASSWORD-ALGORITHMS.</summary>
    private static void AssertStaleNonce(TurnMessage response, byte[] oldNonce)
    {
        AssertError(response, 438);
        Assert.NotNull(response.Realm);
        Assert.NotNull(response.Nonce);
        Assert.NotEqual(oldNonce, response.Nonce);
        Assert.StartsWith("obMatJos2gAAA", Encoding.ASCII.GetString(response.Nonce));
        Assert.NotNull(response.PasswordAlgorithms);
        Assert.False(response.Has(StunAttributeType.Username));
        Assert.True(response.FingerprintValid);
    }

    private static byte[] AlgorithmList(params StunPasswordAlgorithm[] algorithms)
    {
        var list = new byte[algorithms.Length * 4];
        for (var i = 0; i < algorithms.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(list.AsSpan(i * 4), (ushort)algorithms[i]);
        }

        return list;
    }

    private static Socket PeerSocket(string address = "127.0.0.1")
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Parse(address), 0));
        return socket;
    }

    private static IPEndPoint Endpoint(Socket socket) => (IPEndPoint)socket.LocalEndPoint!;

    private static async Task<(byte[] Data, IPEndPoint From)> PeerReceiveAsync(Socket peer)
    {
        var buffer = new byte[65536];
        using var timeout = new CancellationTokenSource(TurnTestClient.Timeout);
        var result = await peer.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
        return (buffer[..result.ReceivedBytes], (IPEndPoint)result.RemoteEndPoint);
    }

    private static bool CanBind(IPEndPoint endpoint)
    {
        try
        {
            using var socket = new Socket(endpoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            socket.Bind(endpoint);
            return true;
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            return false;
        }
    }
}
