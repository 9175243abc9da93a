using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

internal static class EngineTestServer
{
    /// <summary>A lab broker (anonymous allowed, no $SYS noise) plus the test's own settings, which win.</summary>
    public static Task<RelayTestServer> StartAsync(params string[] settings) => StartAsync(null, settings);

    public static Task<RelayTestServer> StartAsync(Action<IServiceCollection>? configure, params string[] settings)
    {
        var all = new List<string>();
        if (!settings.Any(static s => s.StartsWith("Relay:Mqtt:AllowAnonymous=", StringComparison.Ordinal)))
        {
            all.Add("Relay:Mqtt:AllowAnonymous=true");
        }

        if (!settings.Any(static s => s.StartsWith("Relay:Mqtt:SysIntervalSeconds=", StringComparison.Ordinal)))
        {
            all.Add("Relay:Mqtt:SysIntervalSeconds=0");
        }

        all.Add("Relay:Turn:Enabled=false");
        all.AddRange(settings);
        return RelayTestServer.StartAsync(configure, [.. all]);
    }

    public static MqttMetrics MqttMetrics(this RelayTestServer server) => server.Services.GetRequiredService<MqttMetrics>();
}
