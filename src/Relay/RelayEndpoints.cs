using System.Text;
using Relay.Rendezvous.Introductions;
using Relay.Rendezvous.Stun;
using Relay.Server.Api;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Push.Commands;
using Relay.Server.Push.Webhooks;
using Relay.Server.Rendezvous;
using Relay.Server.StunTurn;
using Relay.Server.Turn;

namespace Relay.Server;

/// <summary>The host's own endpoints on the HTTP port: <c>/healthz</c> and <c>/metrics</c>.</summary>
internal static class RelayEndpoints
{
    /// <summary><c>/healthz</c>: "ok" and the STUN UDP endpoints actually bound.</summary>
    public static WebApplication MapRelayHealth(this WebApplication app)
    {
        app.MapGet("/healthz", static (StunTurnUdpListener udp) =>
        {
            var text = new StringBuilder("ok\n");
            foreach (var endpoint in udp.BoundEndpoints)
            {
                text.Append("stun udp ").Append(endpoint).Append('\n');
            }

            return Results.Text(text.ToString(), "text/plain; charset=utf-8");
        });
        return app;
    }

    /// <summary><c>/metrics</c>: every feature's counters in the Prometheus text format (0.0.4).</summary>
    public static WebApplication MapRelayMetrics(this WebApplication app)
    {
        app.MapGet("/metrics", static (RelayMetricsText metrics) => Results.Text(metrics.Write(), "text/plain; version=0.0.4; charset=utf-8"));
        return app;
    }
}

/// <summary>Writes each feature's metric families, in a fixed order, into one scrape.</summary>
internal sealed class RelayMetricsText(StunMetrics stun, TurnMetrics turn, MqttMetrics mqtt, MqttIdentityMetrics identity, PushMetrics push, ApiMetrics api, WebhookMetrics webhooks, RendezvousMetrics rendezvous)
{
    public string Write()
    {
        var text = new StringBuilder();
        stun.WritePrometheus(text);
        turn.WritePrometheus(text);
        mqtt.WritePrometheus(text);
        identity.WritePrometheus(text);
        push.WritePrometheus(text);
        api.WritePrometheus(text);
        webhooks.WritePrometheus(text);
        RendezvousPrometheus.Write(rendezvous, text);
        return text.ToString();
    }
}
