using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Devices;
using Relay.Server.Hosting;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Mqtt.Transport;
using Relay.Server.Telemetry;

namespace Relay.Server.Mqtt;

/// <summary>
/// The one place the MQTT plane is registered: <c>Relay:Mqtt</c>, the broker's parts, its listeners and
/// metrics, and behind their interfaces the embedded durable default (SQLite stores, device registry,
/// authenticator, ACL). A test or another deployment replaces a store by registering its own implementation
/// after this call (the last registration of an interface wins); the in-memory stores in the tests are such a
/// replacement.
/// </summary>
internal static class MqttServices
{
    /// <summary>
    /// Registers the plane. <see cref="IDevicePresence"/> is the broker's; a feature that enriches presence
    /// decorates that registration explicitly.
    /// </summary>
    public static IServiceCollection AddRelayMqtt(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<MqttOptions>(configuration, MqttOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<MqttOptions>, MqttOptionsValidator>());
        services.AddBoundOptions<MqttOptions>();
        services.AddRelayMetrics<MqttMetrics>();
        MqttPersistence.AddSqlite(services);

        // The broker: each owner of state its own singleton (see the types' summaries for who owns what).
        services.AddSingleton(static s => new MqttTopicLimits(s.GetRequiredService<MqttOptions>(), s.GetRequiredService<MqttMetrics>(), s.GetRequiredService<ILogger<MqttTopicLimits>>(), s.GetRequiredService<TimeProvider>()));
        services.AddSingleton<MqttStoreWriter>();
        services.AddSingleton<MqttSubscriptionTree>();
        services.AddSingleton<MqttSessionContext>();
        services.AddSingleton<MqttRetainedMessages>();
        services.AddSingleton<MqttRouter>();
        services.AddSingleton<MqttSessionRegistry>();
        services.AddSingleton<MqttObservers>();
        services.AddSingleton<MqttConnectionsPerIp>();
        services.AddSingleton<MqttConnections>();
        services.AddSingleton<MqttHousekeeping>();
        services.AddSingleton<MqttClientLog>();
        services.AddSingleton<MqttConnectionServices>();
        services.AddSingleton<MqttBrokerService>();
        services.AddSingleton<MqttDevices>();
        services.AddSingleton<IDevicePresence>(static s => s.GetRequiredService<MqttDevices>());
        services.AddSingleton<IDeviceConnections>(static s => s.GetRequiredService<MqttDevices>());
        services.AddSingleton<IMqttDeviceChannel>(static s => s.GetRequiredService<MqttDevices>());
        services.AddSingleton<MqttConnectionHandler>();
        services.AddSingleton<MqttSocketListener>();
        services.AddHostedService<MqttStartup>();
        return services;
    }

    /// <summary>
    /// Kestrel's MQTT listeners: plain TCP when <c>TcpTransport=Kestrel</c> (otherwise <see cref="MqttSocketListener"/>
    /// serves it), and TLS (MQTT 5.0 §4.2) when a certificate is configured.
    /// </summary>
    public static KestrelServerOptions ListenMqtt(this KestrelServerOptions kestrel, MqttOptions mqtt, ServerCertificate certificate)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(mqtt);
        ArgumentNullException.ThrowIfNull(certificate);
        if (!mqtt.Enabled)
        {
            return kestrel;
        }

        var addresses = ListenAddresses.Parse(mqtt.ListenAddresses);
        void Listen(int port, Action<ListenOptions> configure)
        {
            if (addresses is null)
            {
                kestrel.ListenAnyIP(port, configure);
                return;
            }

            foreach (var address in addresses)
            {
                kestrel.Listen(address, port, configure);
            }
        }

        if (mqtt.TcpTransport == MqttTcpTransport.Kestrel)
        {
            Listen(mqtt.Port, static listen => listen.UseConnectionHandler<MqttConnectionHandler>());
        }

        if (certificate.Enabled)
        {
            // Client certificates are checked in the handshake (review M8); the device they name at CONNECT.
            var services = kestrel.ApplicationServices;
            var clientCertificates = MqttClientCertificateValidator.Create(
                mqtt,
                services.GetRequiredService<MqttIdentityMetrics>(),
                services.GetRequiredService<ILoggerFactory>().CreateLogger("Relay.Server.Mqtt.Identity"),
                services.GetRequiredService<TimeProvider>());
            Listen(mqtt.TlsPort, listen =>
            {
                listen.UseRelayTls(certificate, configure: clientCertificates is null ? null : clientCertificates.Apply);
                listen.UseConnectionHandler<MqttConnectionHandler>();
            });
        }

        return kestrel;
    }

    /// <summary>MQTT over WebSocket at <c>/mqtt</c> on the HTTP port, when MQTT and <c>WebSocket</c> are on.</summary>
    public static WebApplication MapRelayMqtt(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        if (app.Services.GetRequiredService<IOptions<MqttOptions>>().Value is { Enabled: true, WebSocket: true })
        {
            app.UseWebSockets();
            app.Map(MqttWebSocketTransport.Path, MqttWebSocketTransport.HandleAsync);
        }

        return app;
    }
}

/// <summary>
/// Starts the MQTT plane in the order it needs: configured devices into the registry, then the broker (which
/// restores sessions), then our TCP listener, so a reconnecting device finds its session; stops in reverse.
/// Kestrel's MQTT listeners start after every hosted service.
/// </summary>
internal sealed class MqttStartup(MqttOptions options, IDeviceRegistry registry, MqttBrokerService broker, MqttSocketListener listener) : IHostedService
{
    private bool ServesTcp => options is { Enabled: true, TcpTransport: MqttTcpTransport.Sockets };

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Enabled)
        {
            await MqttDeviceProvisioning.ProvisionConfiguredDevicesAsync(registry, options, cancellationToken).ConfigureAwait(false);
        }

        await broker.StartAsync(cancellationToken).ConfigureAwait(false);
        if (ServesTcp)
        {
            await listener.StartAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (ServesTcp)
        {
            await listener.StopAsync(cancellationToken).ConfigureAwait(false);
        }

        await broker.StopAsync(cancellationToken).ConfigureAwait(false);
    }
}
