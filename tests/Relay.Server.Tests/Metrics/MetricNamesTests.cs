using System.Net;
using Relay.Protocol.Rendezvous;
using Relay.Protocol.Stun;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Api;
using Relay.Server.Tests.Push.Commands;
using Relay.Server.Tests.RendezvousServer;
using Relay.Server.Tests.Turn;

namespace Relay.Server.Tests.Metrics;

/// <summary>
/// The metric families on <c>/metrics</c> are a contract with every dashboard and alert built on them:
/// <c>metric-names.txt</c> lists each family with its Prometheus type and label keys, and a scrape of the
/// real server after a little traffic on every feature must show exactly those, in valid text format.
/// A new metric is appended to the file; a listed one is never renamed or dropped.
/// </summary>
public sealed class MetricNamesTests
{
    private const string TurnUser = "alice";
    private const string TurnPassword = "alice-password";

    private static string NamesFile => Path.Combine(RepoPaths.Root, "tests", "Relay.Server.Tests", "Metrics", "metric-names.txt");

    [Fact]
    public async Task MetricsEndpoint_ShowsEveryCommittedFamily_WithItsTypeAndLabels_InValidTextFormat()
    {
        await using var hook = await WebhookReceiver.StartAsync(_ => 200);
        await using var kit = await RendezvousTestKit.StartAsync(
            "Relay:Rendezvous:Policy=Any",
            $"Relay:Webhooks:0:Url={hook.Url}",
            "Relay:Webhooks:0:Secret=metrics-webhook-secret",
            $"Relay:Connectors:Http:0:Url={hook.Url}",
            $"Relay:Turn:Users:0={TurnUser}:{TurnPassword}");
        await ProduceTrafficAsync(kit);

        var (response, text) = await ScrapeAsync(kit, static families => families.Any(static f => f.Name == "relay_rendezvous_results_total" && f.Samples.Count > 0));
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response);

        var scraped = PrometheusExposition.Parse(text).Select(static f => $"{f.Name} {f.Type} {f.LabelKeys}".TrimEnd()).ToHashSet(StringComparer.Ordinal);
        var committed = File.ReadAllLines(NamesFile).Where(static l => l.Length > 0 && !l.StartsWith('#')).ToList();
        Assert.Equal(committed.Count, committed.Distinct(StringComparer.Ordinal).Count());

        var missing = committed.Where(l => !scraped.Contains(l)).ToList();
        Assert.True(missing.Count == 0, $"families in metric-names.txt missing from /metrics (or with another type or label set):\n{string.Join('\n', missing)}\n\n/metrics has:\n{string.Join('\n', scraped.Order(StringComparer.Ordinal))}");
        var unlisted = scraped.Where(l => !committed.Contains(l)).ToList();
        Assert.True(unlisted.Count == 0, $"families on /metrics that metric-names.txt does not list (append them):\n{string.Join('\n', unlisted)}");
    }

    /// <summary>A request on each feature: STUN Binding, a TURN allocation, MQTT devices introduced by rendezvous with a reported result, a push command (with a webhook configured), and a refused API call.</summary>
    private static async Task ProduceTrafficAsync(RendezvousTestKit kit)
    {
        using (var stun = StunTestClient.UdpClient(IPAddress.Loopback))
        {
            await StunTestClient.ExchangeAsync(stun, StunTestClient.Request(StunTransactionId.NewRandom()), new IPEndPoint(IPAddress.Loopback, kit.Server.StunPort));
        }

        await using (var turn = TurnTestClient.Udp(kit.Server, TurnUser, TurnPassword))
        {
            await turn.AllocateAsync();
        }

        await using var d1 = await kit.ConnectAsync("d1");
        await using var d2 = await kit.ConnectAsync("d2");
        var session = RendezvousDevice.NewSessionId();
        await d1.SendAsync(RendezvousDevice.Connect(session, "d2", "PortRestricted"));
        Assert.Equal(RendezvousMessageTypes.Offer, (await d2.ReceiveAsync()).Type);
        await d2.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Answer, SessionId = session, Candidates = [], Nat = "Symmetric" });
        Assert.Equal(RendezvousMessageTypes.Answer, (await d1.ReceiveAsync()).Type);
        await d1.SendAsync(new RendezvousMessage { Type = RendezvousMessageTypes.Result, SessionId = session, Path = "direct", MillisecondsToDirect = 120 });

        await PushTestKit.PushAsync(kit.Http, "d3", "blink");
        using var anonymous = PushTestKit.Client(kit.Server.HttpPort, token: null);
        using var refused = await anonymous.GetAsync("/v1/devices");
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
    }

    /// <summary>Scrapes until <paramref name="ready"/> holds (the rendezvous result is counted asynchronously), bounded.</summary>
    private static async Task<(string ContentType, string Text)> ScrapeAsync(RendezvousTestKit kit, Func<IReadOnlyList<ScrapedFamily>, bool> ready)
    {
        string? contentType = null, text = null;
        await Poll.UntilAsync(() =>
        {
            using var response = kit.Http.GetAsync("/metrics").GetAwaiter().GetResult();
            response.EnsureSuccessStatusCode();
            contentType = response.Content.Headers.ContentType?.ToString();
            text = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            return ready(PrometheusExposition.Parse(text));
        }, "the rendezvous result on /metrics");
        return (contentType!, text!);
    }
}
