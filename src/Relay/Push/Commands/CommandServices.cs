using Relay.Server.Mqtt;

namespace Relay.Server.Push.Commands;

/// <summary>
/// Registers the command lifecycle: options, <c>commands.db</c>, metrics, the <see cref="CommandLoop"/>
/// (hosted), its MQTT observer and the API's <see cref="CommandService"/>.
/// </summary>
internal static class CommandServices
{
    public static void Add(IServiceCollection services, IConfiguration configuration, string dataDirectory)
    {
        // Validated already by RelayConfiguration.Load (same binder); errors here would have stopped the start.
        var options = PushOptions.Bind(configuration, []);
        services.AddSingleton(options);
        services.AddSingleton(_ => CommandStore.Open(dataDirectory));
        services.AddSingleton<PushMetrics>();
        services.AddSingleton<PushLimitHits>();
        services.AddSingleton<CommandLoop>();
        services.AddSingleton<CommandService>();
        services.AddSingleton<CommandMqttObserver>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<CommandMqttObserver>());
        services.AddSingleton<IMqttClientObserver>(static s => s.GetRequiredService<CommandMqttObserver>());
        services.AddHostedService(static s => s.GetRequiredService<CommandLoop>());
    }
}
