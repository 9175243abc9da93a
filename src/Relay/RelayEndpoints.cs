using System.Text;
using Relay.Server.StunTurn;

namespace Relay.Server;

/// <summary>The host's own endpoint on the HTTP port: <c>/healthz</c> (<c>/metrics</c> is Telemetry's).</summary>
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
}
