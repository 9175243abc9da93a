using Microsoft.Extensions.Options;
using Relay.Rendezvous.Stun;
using Relay.Server.Api;
using Relay.Server.Connectors;
using Relay.Server.Events;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Push;
using Relay.Server.Rendezvous;
using Relay.Server.Schedules;
using Relay.Server.StunTurn;
using Relay.Server.Telemetry;
using Relay.Server.Twins;

namespace Relay.Server;

/// <summary>Composes the relay server from its features: services, listeners and endpoints. Tests build it in-process.</summary>
public static class RelayHost
{
    /// <summary>
    /// Creates the application. Configuration errors throw <see cref="RelayConfigurationException"/> here,
    /// listing every problem, before anything listens.
    /// </summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = args,
            ContentRootPath = AppContext.BaseDirectory,
        });
        configure?.Invoke(builder);

        var configuration = builder.Configuration;
        builder.Services
            .AddRelayHosting(configuration)
            .AddRelayEvents(configuration)
            .AddRelayStunTurn(configuration)
            .AddRelayMqtt(configuration)
            .AddRelayPush(configuration)
            .AddRelaySchedules(configuration)
            .AddRelayConnectors(configuration)
            .AddRelayRendezvous(configuration)
            .AddRelayTwins(configuration)
            .AddRelayApi(configuration)
            .AddRelayTelemetry(configuration);
        builder.Services.AddHostedService<StartupBanner>();

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // Runs inside builder.Build(): the listeners are made from validated options, or Build throws the list of problems.
            var services = kestrel.ApplicationServices;
            services.ValidateRelayConfiguration();
            var certificate = services.GetRequiredService<ServerCertificate>();
            kestrel.AddServerHeader = false;
            kestrel.ListenStunTurn(services.GetRequiredService<IOptions<StunOptions>>().Value, certificate);
            var httpGuard = services.GetRequiredService<HttpConnectionGuard>();
            kestrel.ListenRelayHttp(services.GetRequiredService<IOptions<HttpOptions>>().Value, certificate, httpGuard);
            kestrel.ListenMqtt(services.GetRequiredService<IOptions<MqttOptions>>().Value, certificate);
        });

        var app = builder.Build();
        try
        {
            // What the host would find at start, found now: every bad key, and a data directory that cannot be made.
            app.Services.ValidateRelayConfiguration();
            // One server per data directory (review L5): taken once the configuration is known to be good.
            app.Services.GetRequiredService<RelayDataDirectory>().Claim();

            // The hosted services (the same singletons the host starts) built now, and with them the stores they
            // open: a corrupt database is then one RelayConfigurationException line from here, not a failed host
            // start logged with a stack trace (review L5).
            _ = app.Services.GetServices<IHostedService>().ToArray();
        }
        catch
        {
            ((IDisposable)app).Dispose();
            throw;
        }

        app.MapRelayMqtt();
        app.MapRelayApi();
        app.MapRelayHealth();
        app.MapRelayMetrics();
        return app;
    }
}
