using Relay.Server.Devices;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Mqtt.Transport;

namespace Relay.Server.Mqtt;

/// <summary>
/// The one place the MQTT plane is registered: the broker, its listeners' handler and metrics, and behind
/// their interfaces the embedded durable default (SQLite stores, device registry, authenticator, ACL). A
/// test or another deployment replaces one by registering its own implementation after this call (the last
/// registration wins); the in-memory stores in <c>InMemory/</c> are such a replacement.
/// </summary>
internal static class MqttServices
{
    public static void Add(IServiceCollection services, MqttOptions options, string dataDirectory)
    {
        services.AddSingleton(options);
        services.AddSingleton<MqttMetrics>();
        MqttPersistence.AddSqlite(services, dataDirectory, options);

        // Devices named in configuration are in the registry before the broker starts, and hosted
        // services all start before Kestrel accepts the first CONNECT.
        services.AddHostedService(static s => new MqttDeviceProvisioning(s.GetRequiredService<IDeviceRegistry>(), s.GetRequiredService<MqttOptions>()));
        services.AddSingleton<MqttBroker>();
        services.AddSingleton<IDevicePresence>(static s => s.GetRequiredService<MqttBroker>());
        services.AddSingleton<IDeviceConnections>(static s => s.GetRequiredService<MqttBroker>());
        services.AddSingleton<IMqttDeviceChannel>(static s => s.GetRequiredService<MqttBroker>());
        services.AddHostedService(static s => s.GetRequiredService<MqttBroker>());
        services.AddSingleton<MqttConnectionHandler>();
        if (options is { Enabled: true, TcpTransport: "Sockets" })
        {
            services.AddSingleton<MqttSocketListener>();
            services.AddHostedService(static s => s.GetRequiredService<MqttSocketListener>());
        }
    }
}
