using Relay.Mqtt.InMemory;

namespace Relay.Mqtt;

/// <summary>
/// The one place the MQTT plane is registered. The stores and identity services are registered by
/// interface with in-memory defaults; a durable or registry-backed implementation replaces one by adding
/// its own registration after this call (the last registration wins).
/// </summary>
internal static class MqttServices
{
    public static void Add(IServiceCollection services, MqttOptions options)
    {
        services.AddSingleton(options);
        services.AddSingleton<MqttMetrics>();
        services.AddSingleton<IMqttSessionStore, InMemorySessionStore>();
        services.AddSingleton<IMqttRetainedStore, InMemoryRetainedStore>();
        services.AddSingleton<IMqttAuthenticator>(static s => new ConfiguredMqttAuthenticator(s.GetRequiredService<MqttOptions>(), s.GetRequiredService<TimeProvider>()));
        services.AddSingleton<IMqttAuthorizer>(static s => new ConfiguredMqttAuthorizer(s.GetRequiredService<MqttOptions>()));
        services.AddSingleton<MqttBroker>();
        services.AddHostedService(static s => s.GetRequiredService<MqttBroker>());
        services.AddSingleton<MqttConnectionHandler>();
    }
}
