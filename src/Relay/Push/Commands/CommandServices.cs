using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;

namespace Relay.Server.Push.Commands;

/// <summary>Registers the command lifecycle: <c>Relay:Push</c>, <c>commands.db</c>, <see cref="CommandService"/> (also as an MQTT observer and hosted service).</summary>
internal static class CommandServices
{
    public static IServiceCollection AddPushCommands(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayOptions<PushOptions>(configuration, PushOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PushOptions>, PushOptionsValidator>());
        services.AddBoundOptions<PushOptions>();
        services.AddSingleton(static sp => CommandStore.Open(sp.GetRequiredService<RelayDataDirectory>().FullPath));
        services.AddSingleton<CommandService>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<CommandService>());
        services.AddSingleton<IMqttClientObserver>(static s => s.GetRequiredService<CommandService>());
        services.AddHostedService(static s => s.GetRequiredService<CommandService>());
        return services;
    }
}
