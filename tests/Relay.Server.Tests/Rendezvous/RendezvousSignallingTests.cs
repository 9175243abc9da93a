using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Rendezvous;

namespace Relay.Server.Tests.RendezvousServer;

/// <summary>Rendezvous signalling (docs/rendezvous.md) against the real server over real MQTT connections.</summary>
public sealed class RendezvousSignallingTests
{
    [Fact]
    public async Task FullExchange_RelaysCandidatesAndNat_AndGivesBothTheSameKey()
    {
        await using var kit = await RendezvousTestKit.StartAsync();
        await kit.TagAsync("d1", "owner:alice");
        await kit.TagAsync("d2", "owner:alice", "lab");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");

        var session = RendezvousDevice.NewSessionId();
        var d1Candidates = RendezvousDevice.Candidates("10.0.1.2", 40000);
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Connect, SessionId = session, Peer = "d2", Candidates = d1Candidates, Nat = "Symmetric" });

        var offer = await d2.ReceiveAsync();
        Assert.Equal(RendezvousMessageTypes.Offer, offer.Type);
        Assert.Equal(session, offer.SessionId);
        Assert.Equal("d1", offer.Peer);
        Assert.Equal(d1Candidates, offer.Candidates);
        Assert.Equal("Symmetric", offer.Nat);
        Assert.Equal("controlled", offer.Role);
        Assert.Equal(32, Convert.FromBase64String(offer.Key!).Length);

        var d2Candidates = RendezvousDevice.Candidates("10.0.2.2", 50000);
        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Answer, SessionId = session, Candidates = d2Candidates, Nat = "PortRestricted" });

        var answer = await d1.ReceiveAsync();
        Assert.Equal(RendezvousMessageTypes.Answer, answer.Type);
        Assert.Equal(session, answer.SessionId);
        Assert.Equal("d2", answer.Peer);
        Assert.Equal(d2Candidates, answer.Candidates);
        Assert.Equal("PortRestricted", answer.Nat);
        Assert.Equal("controlling", answer.Role);
        Assert.Equal(offer.Key, answer.Key);

        var start = await d2.ReceiveAsync();
        Assert.Equal(RendezvousMessageTypes.Start, start.Type);
        Assert.Equal(session, start.SessionId);
        Assert.Null(start.Key);

        // The session is forgotten after the answer: a second answer is not relayed again.
        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Answer, SessionId = session, Candidates = d2Candidates });
        Assert.Equal(session, (await d2.ReceiveErrorAsync(RendezvousErrorCodes.BadRequest)).SessionId);
        await d1.AssertNothingReceivedAsync();

        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_attempts_total{pair=\"PortRestricted/Symmetric\"}"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_introductions_total{outcome=\"answered\"}"));
        Assert.Equal(0, await kit.MetricAsync("relay_rendezvous_pending_sessions"));
    }

    [Fact]
    public async Task ByDefault_NoSharedTag_IsForbidden_AndAnUnknownPeerLooksTheSame()
    {
        await using var kit = await RendezvousTestKit.StartAsync();
        await kit.TagAsync("d1", "owner:alice");
        await kit.TagAsync("d2", "owner:bob");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");

        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2"));
        var forbidden = await d1.ReceiveErrorAsync(RendezvousErrorCodes.Forbidden);
        Assert.Equal(session, forbidden.SessionId);

        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "no-such-device"));
        var ghost = await d1.ReceiveErrorAsync(RendezvousErrorCodes.Forbidden);
        Assert.Equal(forbidden.Message, ghost.Message);

        await d2.AssertNothingReceivedAsync();
        Assert.Equal(2, await kit.MetricAsync("relay_rendezvous_errors_total{code=\"forbidden\"}"));
    }

    [Fact]
    public async Task A_Rule_Allows_OneWay_UnderPolicyRules()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Rules", "Relay:Rendezvous:Rules:0:From=tag:techs", "Relay:Rendezvous:Rules:0:To=tag:field");
        await kit.TagAsync("d1", "techs", "shared");
        await kit.TagAsync("d2", "field", "shared");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");

        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2"));
        var offer = await d2.ReceiveAsync();
        Assert.Equal(RendezvousMessageTypes.Offer, offer.Type);
        Assert.Equal(session, offer.SessionId);

        // Policy Rules: the shared tag alone allows nothing, and the rule names one direction.
        await d2.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d1"));
        await d2.ReceiveErrorAsync(RendezvousErrorCodes.Forbidden);
        await d1.AssertNothingReceivedAsync();
    }

    [Fact]
    public async Task A_DenyRule_Wins_OverAnEarlierAllowAndPolicyAny()
    {
        await using var kit = await RendezvousTestKit.StartAsync(
            "Relay:Rendezvous:Policy=Any",
            "Relay:Rendezvous:Rules:0:From=*", "Relay:Rendezvous:Rules:0:To=*",
            "Relay:Rendezvous:Rules:1:From=device:d1", "Relay:Rendezvous:Rules:1:To=tag:field", "Relay:Rendezvous:Rules:1:Deny=true");
        await kit.TagAsync("d2", "field");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        await using var d3 = await kit.ConnectAsync("d3");

        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        await d1.ReceiveErrorAsync(RendezvousErrorCodes.Forbidden);
        await d2.AssertNothingReceivedAsync();

        var session = RendezvousDevice.NewSessionId();
        await d3.SendAsync(RendezvousDevice.Connect(session, "d2"));
        Assert.Equal(session, (await d2.ReceiveAsync()).SessionId);

        // Under Any, a peer that does not exist may be named as such.
        await d3.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "nobody"));
        await d3.ReceiveErrorAsync(RendezvousErrorCodes.UnknownPeer);
    }

    [Fact]
    public async Task OfflinePeer_AndPeerNotSubscribed_AreOffline()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any");
        await using var d1 = await kit.ConnectAsync("d1");

        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2"));
        Assert.Equal(session, (await d1.ReceiveErrorAsync(RendezvousErrorCodes.Offline)).SessionId);

        await using var d2 = await kit.ConnectAsync("d2", subscribe: false);
        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        await d1.ReceiveErrorAsync(RendezvousErrorCodes.Offline);
        Assert.Equal(2, await kit.MetricAsync("relay_rendezvous_introductions_total{outcome=\"offline\"}"));
        Assert.Equal(0, await kit.MetricAsync("relay_rendezvous_pending_sessions"));
    }

    [Fact]
    public async Task RateLimit_RefusesPastTheBucket_CountsIt_AndRefillsWithTime()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any", "Relay:Rendezvous:MaxIntroductionsPerMinute=2", "Relay:Rendezvous:OfferTimeoutSeconds=3600");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");

        for (var i = 0; i < 2; i++)
        {
            await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
            Assert.Equal(RendezvousMessageTypes.Offer, (await d2.ReceiveAsync()).Type);
        }

        var refused = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(refused, "d2"));
        Assert.Equal(refused, (await d1.ReceiveErrorAsync(RendezvousErrorCodes.RateLimited)).SessionId);
        await d2.AssertNothingReceivedAsync();
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_limit_hits_total{limit=\"introductions_per_minute\"}"));

        // The clock is the server's: half a minute refills one token (2 per minute), and no more. (The offers
        // above stay pending meanwhile: their timeout is an hour, so no timeout error interleaves.)
        kit.Clock.Advance(TimeSpan.FromSeconds(30));
        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        Assert.Equal(RendezvousMessageTypes.Offer, (await d2.ReceiveAsync()).Type);
        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        await d1.ReceiveErrorAsync(RendezvousErrorCodes.RateLimited);
        Assert.Equal(2, await kit.MetricAsync("relay_rendezvous_limit_hits_total{limit=\"introductions_per_minute\"}"));
    }

    [Fact]
    public async Task PendingSessions_AreCapped()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any", "Relay:Rendezvous:MaxPendingSessions=1");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        await using var d3 = await kit.ConnectAsync("d3");

        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        Assert.Equal(RendezvousMessageTypes.Offer, (await d2.ReceiveAsync()).Type);
        await d3.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        await d3.ReceiveErrorAsync(RendezvousErrorCodes.RateLimited);
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_limit_hits_total{limit=\"pending_sessions\"}"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_pending_sessions"));
    }

    [Fact]
    public async Task UnansweredOffer_TimesOut_OnTheServerClock_AndALateAnswerIsRefused()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any", "Relay:Rendezvous:OfferTimeoutSeconds=15");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");

        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2"));
        Assert.Equal(RendezvousMessageTypes.Offer, (await d2.ReceiveAsync()).Type);
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_pending_sessions"));

        kit.Clock.Advance(TimeSpan.FromSeconds(16));
        var timeout = await d1.ReceiveErrorAsync(RendezvousErrorCodes.Timeout);
        Assert.Equal(session, timeout.SessionId);

        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Answer, SessionId = session, Candidates = [] });
        await d2.ReceiveErrorAsync(RendezvousErrorCodes.BadRequest);
        await d1.AssertNothingReceivedAsync();
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_introductions_total{outcome=\"timeout\"}"));
    }

    [Fact]
    public async Task Reject_GivesTheRequesterRejected_AndOnlyTheOfferedPeerMayReject()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        await using var d3 = await kit.ConnectAsync("d3");

        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2"));
        Assert.Equal(RendezvousMessageTypes.Offer, (await d2.ReceiveAsync()).Type);

        // A third device that guesses the session id cannot end it.
        await d3.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Reject, SessionId = session });
        await d3.ReceiveErrorAsync(RendezvousErrorCodes.BadRequest);

        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Reject, SessionId = session, Message = "busy" });
        var rejected = await d1.ReceiveErrorAsync(RendezvousErrorCodes.Rejected);
        Assert.Equal(session, rejected.SessionId);
        Assert.Contains("busy", rejected.Message, StringComparison.Ordinal);
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_introductions_total{outcome=\"rejected\"}"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TurnCredentials_AreMinted_OnTheConnectionsAddress_AndOurTurnServerAcceptsThem(bool configuredSecret)
    {
        string[] settings = configuredSecret ? ["Relay:Turn:SharedSecrets:0=rendezvous-test-secret"] : [];
        await using var kit = await RendezvousTestKit.StartAsync(settings);
        await using var d1 = await kit.ConnectAsync("d1");

        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = "r-1" });
        var reply = await d1.ReceiveAsync();
        Assert.Equal(RendezvousMessageTypes.TurnCredentials, reply.Type);
        Assert.Equal("r-1", reply.RequestId);
        var turn = reply.Turn!;
        Assert.EndsWith(":d1", turn.Username, StringComparison.Ordinal);
        Assert.Equal(3600, turn.TtlSeconds);
        var port = kit.Server.StunPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"turn:127.0.0.1:{port}?transport=udp", turn.Uris);
        Assert.Contains($"turn:127.0.0.1:{port}?transport=tcp", turn.Uris);
        Assert.Contains($"stun:127.0.0.1:{port}", turn.Uris);
        if (configuredSecret)
        {
            Assert.Equal(TurnCredentials.CreateTimeLimited("rendezvous-test-secret", "d1", DateTimeOffset.FromUnixTimeSeconds(long.Parse(turn.Username.Split(':')[0], System.Globalization.CultureInfo.InvariantCulture))).Password, turn.Password);
        }

        foreach (var transport in new[] { TurnTransport.Udp, TurnTransport.Tcp })
        {
            await using var client = await TurnClient.AllocateAsync(new IPEndPoint(IPAddress.Loopback, kit.Server.StunPort), transport, new TurnCredentials(turn.Username, turn.Password));
            Assert.Equal(IPAddress.Loopback, client.RelayedAddress.Address);
        }

        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_turn_credentials_minted_total"));
    }

    [Fact]
    public async Task TurnCredentials_WithTurnDisabled_AreUnavailable()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Turn:Enabled=false");
        await using var d1 = await kit.ConnectAsync("d1");
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = "r-2" });
        Assert.Equal("r-2", (await d1.ReceiveErrorAsync(RendezvousErrorCodes.Unavailable)).RequestId);
    }

    [Fact]
    public async Task Disabled_AnswersNothing_AndGeneratesNoTurnSecret()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Enabled=false", "Relay:Rendezvous:Policy=Any");
        Assert.False(((Relay.Server.Turn.TurnCredentialStore)kit.Server.Services.GetService(typeof(Relay.Server.Turn.TurnCredentialStore))!).CanMintRestCredentials);

        // Nothing hears the devices' rendezvous topics (the ping barriers below alone could not prove it: an answer may lag a PINGRESP).
        Assert.Null(kit.Server.Services.GetService(typeof(Relay.Server.Rendezvous.RendezvousService)));
        Assert.DoesNotContain(kit.Server.Services.GetServices<Relay.Server.Mqtt.IMqttMessageObserver>(), static o => o is Relay.Server.Rendezvous.RendezvousService);
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = "r-3" });
        await d1.SendAsync(RendezvousDevice.Connect(RendezvousDevice.NewSessionId(), "d2"));
        await d1.SendRawAsync("{ not json");
        await d1.AssertNothingReceivedAsync();
        await d2.AssertNothingReceivedAsync();
        Assert.Equal(0, await kit.MetricAsync("relay_rendezvous_messages_total{type=\"invalid\"}"));
    }

    [Fact]
    public async Task NatReport_ShowsInTheDevicesPresence()
    {
        await using var kit = await RendezvousTestKit.StartAsync();
        await using var d1 = await kit.ConnectAsync("d1");

        Assert.Equal(JsonValueKind.Null, (await DeviceAsync(kit, "d1")).GetProperty("nat").ValueKind);
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.NatReport, Nat = "Symmetric" });
        await Poll.UntilAsync(async () => (await DeviceAsync(kit, "d1")).GetProperty("nat").GetString() == "Symmetric", "the NAT report in GET /v1/devices/d1");

        // Kept after the device leaves, like the rest of its last-known presence.
        await d1.DisposeAsync();
        await Poll.UntilAsync(async () => !(await DeviceAsync(kit, "d1")).GetProperty("online").GetBoolean(), "d1 offline");
        Assert.Equal("Symmetric", (await DeviceAsync(kit, "d1")).GetProperty("nat").GetString());
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_messages_total{type=\"nat\"}"));

        // ... and in `relay api devices list`.
        var output = new StringWriter();
        var error = new StringWriter();
        var code = await Relay.Server.Cli.ApiCli.RunAsync(["api", "devices", "list", "--server", $"http://127.0.0.1:{kit.Server.HttpPort}", "--token", Push.Commands.PushTestKit.Token], output, error, _ => null);
        Assert.True(code == 0, error.ToString());
        Assert.Contains("\nd1\toffline\t", output.ToString(), StringComparison.Ordinal);
        Assert.Matches(@"\nd1\t[^\n]*\tSymmetric\t", output.ToString());
        Assert.Matches(@"\nd2\t[^\n]*\t-\t", output.ToString());
    }

    [Fact]
    public async Task Results_ShowInMetrics_ByNatPair_OncePerSession()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        await using var d3 = await kit.ConnectAsync("d3");

        var direct = await IntroduceAsync(d1, "Symmetric", d2, "PortRestricted");
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Result, SessionId = direct, Path = "direct", MillisecondsToDirect = 180 });
        await Poll.UntilAsync(async () => (await kit.MetricAsync("relay_rendezvous_time_to_direct_seconds_count")) == 1, "d1's result");

        // The other side's report of the same session is not a second attempt.
        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Result, SessionId = direct, Path = "direct", MillisecondsToDirect = 200 });
        var relayed = await IntroduceAsync(d3, "Symmetric", d2, "Symmetric");
        await d3.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Result, SessionId = relayed, Path = "relayed" });

        // Not a participant: not counted for that session.
        await d3.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Result, SessionId = direct, Path = "failed" });

        await Poll.UntilAsync(async () => (await kit.MetricAsync("relay_rendezvous_results_ignored_total{reason=\"unknown\"}")) == 1, "the outsider's result");
        await Poll.UntilAsync(async () => (await kit.MetricAsync("relay_rendezvous_results_ignored_total{reason=\"duplicate\"}")) == 1, "d2's duplicate result");
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_results_total{pair=\"PortRestricted/Symmetric\",path=\"direct\"}"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_results_total{pair=\"Symmetric/Symmetric\",path=\"relayed\"}"));
        Assert.Equal(0, await kit.MetricAsync("relay_rendezvous_results_total{pair=\"PortRestricted/Symmetric\",path=\"failed\"}"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_fallbacks_total"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_attempts_total{pair=\"Symmetric/Symmetric\"}"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_time_to_direct_seconds_count"));
        Assert.Equal(0.18, await kit.MetricAsync("relay_rendezvous_time_to_direct_seconds_sum"), 6);
        Assert.Equal(0, await kit.MetricAsync("relay_rendezvous_time_to_direct_seconds_bucket{le=\"0.1\"}"));
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_time_to_direct_seconds_bucket{le=\"0.25\"}"));
    }

    [Fact]
    public async Task MalformedMessages_GetBadRequest_AreCounted_AndTheConnectionStaysUp()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");

        var tooManyCandidates = Enumerable.Range(0, 33).Select(static i => new RendezvousCandidate("host", "10.0.0.1", 1000 + i, 1)).ToArray();
        var session = RendezvousDevice.NewSessionId();
        byte[][] bad =
        [
            "{ not json"u8.ToArray(),
            "[1,2,3]"u8.ToArray(),
            "{\"sessionId\":\"x\"}"u8.ToArray(),
            "{\"type\":\"teleport\"}"u8.ToArray(),
            "{\"type\":\"offer\",\"sessionId\":\"00000000000000000000000000000000\"}"u8.ToArray(),
            "{\"type\":\"connect\",\"sessionId\":\"NOT-HEX\",\"peer\":\"d2\"}"u8.ToArray(),
            "{\"type\":\"nat\",\"nat\":\"Easy\"}"u8.ToArray(),
            "{\"type\":\"turn-credentials-request\"}"u8.ToArray(),
            Encoding.UTF8.GetBytes("{\"type\":\"connect\",\"sessionId\":\"" + session + "\",\"peer\":\"d2\",\"candidates\":[{\"type\":\"host\",\"address\":\"example.com\",\"port\":1,\"priority\":1}]}"),
            JsonSerializer.SerializeToUtf8Bytes(new RendezvousMessage { Type = RendezvousMessageTypes.Connect, SessionId = session, Peer = "d2", Candidates = tooManyCandidates }, RendezvousJsonContext.Default.RendezvousMessage),
            new byte[9000],
        ];
        foreach (var payload in bad)
        {
            await d1.SendRawAsync(payload);
            await d1.ReceiveErrorAsync(RendezvousErrorCodes.BadRequest);
        }

        // The bad connects never reached the peer, and the same connection still works.
        await d2.AssertNothingReceivedAsync();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2"));
        Assert.Equal(session, (await d2.ReceiveAsync()).SessionId);
        Assert.Equal(bad.Length, await kit.MetricAsync("relay_rendezvous_errors_total{code=\"bad-request\"}"));
        Assert.Equal(bad.Length, await kit.MetricAsync("relay_rendezvous_messages_total{type=\"invalid\"}"));
    }

    private static async Task<string> IntroduceAsync(RendezvousDevice requester, string requesterNat, RendezvousDevice peer, string peerNat)
    {
        var session = RendezvousDevice.NewSessionId();
        await requester.SendAsync(RendezvousDevice.Connect(session, peer.Id, requesterNat));
        Assert.Equal(RendezvousMessageTypes.Offer, (await peer.ReceiveAsync()).Type);
        await peer.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Answer, SessionId = session, Candidates = [], Nat = peerNat });
        Assert.Equal(RendezvousMessageTypes.Answer, (await requester.ReceiveAsync()).Type);
        Assert.Equal(RendezvousMessageTypes.Start, (await peer.ReceiveAsync()).Type);
        return session;
    }

    private static async Task<JsonElement> DeviceAsync(RendezvousTestKit kit, string id)
    {
        using var document = JsonDocument.Parse(await kit.Http.GetStringAsync($"/v1/devices/{id}"));
        return document.RootElement.Clone();
    }
}
