using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Telemetry;

namespace Relay.Server.Push.Commands;

/// <summary>
/// Registers the command lifecycle: options, <c>commands.db</c>, metrics, the <see cref="CommandLoop"/>
/// (hosted), its MQTT observer and the API's <see cref="CommandService"/>.
/// </summary>
internal static class CommandServices
{
    public static IServiceCollection AddPushCommands(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayOptions<PushOptions>(configuration, PushOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PushOptions>, PushOptionsValidator>());
        services.AddBoundOptions<PushOptions>();
        services.AddSingleton(static sp => CommandStore.Open(sp.GetRequiredService<RelayDataDirectory>().FullPath));
        services.AddRelayMetrics<PushMetrics>();
        services.AddSingleton<PushLimitHits>();
        services.AddSingleton<CommandLoop>();
        services.AddSingleton<CommandService>();
        services.AddSingleton<CommandMqttObserver>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<CommandMqttObserver>());
        services.AddSingleton<IMqttClientObserver>(static s => s.GetRequiredService<CommandMqttObserver>());
        services.AddHostedService(static s => s.GetRequiredService<CommandLoop>());
        return services;
    }
}
