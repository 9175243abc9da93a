using Relay.Server.Mqtt;

namespace Relay.Server.Push.Commands;

/// <summary>Registers the command lifecycle: options, <c>commands.db</c>, <see cref="CommandService"/> (also as an MQTT observer and hosted service).</summary>
internal static class CommandServices
{
    public static void Add(IServiceCollection services, IConfiguration configuration, string dataDirectory)
    {
        // Validated already by RelayConfiguration.Load (same binder); errors here would have stopped the start.
        var options = PushOptions.Bind(configuration, []);
        services.AddSingleton(options);
        services.AddSingleton(_ => CommandStore.Open(dataDirectory));
        services.AddSingleton<CommandService>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<CommandService>());
        services.AddSingleton<IMqttClientObserver>(static s => s.GetRequiredService<CommandService>());
        services.AddHostedService(static s => s.GetRequiredService<CommandService>());
    }
}
