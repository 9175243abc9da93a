using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Relay.DeviceClient.Nat;
using Relay.DeviceClient.Peers;
using Relay.Protocol.Rendezvous;
using Relay.Server.Tests.DeviceClientNat;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// A <c>connect</c> waits (bounded) for the NAT classification under way so it carries <c>nat</c>. The clock's
/// timers fire only when the test moves it, so the 3 s bound cannot expire behind the test's back: the
/// connect can only go out once the classification ended.
/// </summary>
public sealed class PeerRendezvousNatTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private sealed class Signalling
    {
        public TaskCompletionSource<RendezvousMessage> Connect { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public PeerRendezvous? Rendezvous { get; set; }

        // The server's part: credentials with no URIs (host candidates only), and a refusal of the connect.
        public Task PublishAsync(RendezvousMessage message, CancellationToken cancellationToken)
        {
            RendezvousMessage? reply = null;
            if (message.Type == RendezvousMessageTypes.TurnCredentialsRequest)
            {
                reply = new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentials, RequestId = message.RequestId, Turn = new RendezvousTurnCredentials("u", "p", 3600, []) };
            }
            else if (message.Type == RendezvousMessageTypes.Connect)
            {
                Connect.TrySetResult(message);
                reply = new RendezvousMessage { Type = RendezvousMessageTypes.Error, SessionId = message.SessionId, Code = RendezvousErrorCodes.Forbidden };
            }

            if (reply is not null)
            {
                var body = JsonSerializer.SerializeToUtf8Bytes(reply, RendezvousJsonContext.Default.RendezvousMessage);
                _ = Task.Run(() => Rendezvous!.OnMessage(body), CancellationToken.None);
            }

            return Task.CompletedTask;
        }
    }

    private static (PeerRendezvous, Signalling) Create(FakeTimeProvider clock)
    {
        var signalling = new Signalling();
        var options = new PeerOptions { LocalAddress = IPAddress.Loopback };
        var rendezvous = new PeerRendezvous(options, clock, NullLogger.Instance, signalling.PublishAsync, static _ => { });
        signalling.Rendezvous = rendezvous;
        return (rendezvous, signalling);
    }

    [Fact]
    public async Task Connect_WaitsForTheClassificationUnderWay_AndCarriesNat()
    {
        var (rendezvous, signalling) = Create(new FakeTimeProvider(DateTimeOffset.UnixEpoch));
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        rendezvous.WaitingForNat = () => waiting.TrySetResult();
        var connect = rendezvous.ConnectAsync("d2", CancellationToken.None);

        // Gathered, and now waiting: the connect has not gone out without nat.
        var first = await Task.WhenAny(waiting.Task, signalling.Connect.Task).WaitAsync(Bound);
        Assert.Same(waiting.Task, first);
        await rendezvous.ReportNatAsync(NatType.PortRestricted, CancellationToken.None);

        var sent = await signalling.Connect.Task.WaitAsync(Bound);
        Assert.Equal("PortRestricted", sent.Nat);
        var refused = await Assert.ThrowsAsync<PeerConnectException>(() => connect.WaitAsync(Bound));
        Assert.Equal(RendezvousErrorCodes.Forbidden, refused.Code);
    }

    [Fact]
    public async Task Connect_WhenTheClassificationFailed_GoesWithoutNat_AtOnce()
    {
        var (rendezvous, signalling) = Create(new FakeTimeProvider(DateTimeOffset.UnixEpoch));
        rendezvous.NatDiscoveryEnded();

        var connect = rendezvous.ConnectAsync("d2", CancellationToken.None);

        var sent = await signalling.Connect.Task.WaitAsync(Bound);
        Assert.Null(sent.Nat);
        await Assert.ThrowsAsync<PeerConnectException>(() => connect.WaitAsync(Bound));
    }
}
