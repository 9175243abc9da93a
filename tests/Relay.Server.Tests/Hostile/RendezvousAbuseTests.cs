using System.Text;
using Relay.Protocol.Rendezvous;
using Relay.Rendezvous.Introductions;
using Relay.Server.Primitives;
using Relay.Server.Tests.RendezvousServer;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Rendezvous as a compromised device uses it (review M10, and M5's minting): a flood from one device does
/// not starve another's introduction; oversized messages never take a queue slot; credentials are minted
/// at a bounded rate; candidates no peer should probe are not relayed.
/// </summary>
public sealed class RendezvousAbuseTests
{
    [Fact]
    public async Task AFloodingDevice_DoesNotStarveAnotherDevicesIntroduction()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any", "Relay:Rendezvous:MaxQueuedMessagesPerDevice=4");
        await using var flooder = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        await using var d3 = await kit.ConnectAsync("d3");

        var nat = Encoding.UTF8.GetBytes("{\"type\":\"nat\",\"nat\":\"Symmetric\"}");
        var flood = Task.Run(async () =>
        {
            for (var i = 0; i < 5000; i++)
            {
                await flooder.SendRawAsync(nat);
            }
        });

        var session = RendezvousDevice.NewSessionId();
        await d2.SendAsync(RendezvousDevice.Connect(session, "d3"));
        var offer = await d3.ReceiveAsync();
        Assert.Equal(RendezvousMessageTypes.Offer, offer.Type);
        Assert.Equal(session, offer.SessionId);
        await flood;

        // The flood was absorbed, not queued: the server still answers everyone.
        var again = RendezvousDevice.NewSessionId();
        await d3.SendAsync(RendezvousDevice.Connect(again, "d2"));
        Assert.Equal(again, (await d2.ReceiveAsync()).SessionId);
    }

    [Fact]
    public void TheQueueShare_IsBoundedPerDevice_AndForgotWhenEmpty()
    {
        var shares = new KeyedCounter<string>(StringComparer.Ordinal);
        Assert.True(shares.TryEnter("d1", 2));
        Assert.True(shares.TryEnter("d1", 2));
        Assert.False(shares.TryEnter("d1", 2));
        Assert.True(shares.TryEnter("d2", 2));
        shares.Leave("d1");
        Assert.True(shares.TryEnter("d1", 2));
        shares.Leave("d1");
        shares.Leave("d1");
        shares.Leave("d2");
        Assert.Equal(0, shares.Keys);
        Assert.Equal(0, shares["d1"]);
    }

    [Fact]
    public async Task AnOversizedMessage_IsDroppedBeforeTheQueue_AndCounted()
    {
        await using var kit = await RendezvousTestKit.StartAsync();
        await using var d1 = await kit.ConnectAsync("d1");
        await d1.SendRawAsync(new byte[RendezvousMessageReader.MaxMessageBytes + 1]);
        Assert.Contains("over 8192 bytes", (await d1.ReceiveErrorAsync(RendezvousErrorCodes.BadRequest)).Message, StringComparison.Ordinal);
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_limit_hits_total{limit=\"message_size\"}"));
    }

    [Fact]
    public async Task TurnCredentials_AreMintedAtABoundedRatePerDevice()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:MaxCredentialsPerMinute=2");
        await using var d1 = await kit.ConnectAsync("d1");
        for (var i = 0; i < 2; i++)
        {
            await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = "r" + i });
            Assert.Equal(RendezvousMessageTypes.TurnCredentials, (await d1.ReceiveAsync()).Type);
        }

        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = "r2" });
        var refused = await d1.ReceiveErrorAsync(RendezvousErrorCodes.RateLimited);
        Assert.Equal("r2", refused.RequestId);

        // Another device has its own budget.
        await using var d2 = await kit.ConnectAsync("d2");
        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = "x" });
        Assert.Equal(RendezvousMessageTypes.TurnCredentials, (await d2.ReceiveAsync()).Type);
        Assert.Equal(1, await kit.MetricAsync("relay_rendezvous_limit_hits_total{limit=\"credentials_per_minute\"}"));
    }

    [Fact]
    public async Task CandidatesNoPeerShouldProbe_AreNotRelayed()
    {
        await using var kit = await RendezvousTestKit.StartAsync("Relay:Rendezvous:Policy=Any");
        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        RendezvousCandidate[] sent =
        [
            new("host", "127.0.0.1", 40000, 2130706431),
            new("host", "::1", 40001, 2130706430),
            new("host", "224.0.0.251", 5353, 2130706429),
            new("host", "169.254.169.254", 80, 2130706428),
            new("host", "fe80::1", 40002, 2130706427),
            new("host", "0.0.0.0", 40003, 2130706426),
            new("host", "::ffff:127.0.0.1", 40004, 2130706425),
            new("host", "10.0.1.2", 40005, 2130706424),
            new("srflx", "198.51.100.7", 40006, 1694498815),
        ];
        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Connect, SessionId = session, Peer = "d2", Candidates = sent, Nat = "Symmetric" });
        var offer = await d2.ReceiveAsync();
        Assert.Equal(["10.0.1.2", "198.51.100.7"], offer.Candidates!.Select(static c => c.Address));

        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Answer, SessionId = session, Candidates = [new("host", "127.0.0.2", 1, 1), new("host", "10.0.2.2", 2, 2)] });
        var answer = await d1.ReceiveAsync();
        Assert.Equal(["10.0.2.2"], answer.Candidates!.Select(static c => c.Address));
        Assert.Equal(2, await kit.MetricAsync("relay_rendezvous_limit_hits_total{limit=\"candidates\"}"));
    }
}
