using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;

namespace Relay.Server.Twins;

/// <summary>Registers device state: <c>Relay:Twins</c>, <c>twins.db</c>, metrics, the <see cref="TwinService"/> (hosted) and its MQTT observer.</summary>
internal static class TwinServices
{
    /// <summary>Needs the MQTT plane (<c>AddRelayMqtt</c>) and the event hub (<c>AddRelayEvents</c>).</summary>
    public static IServiceCollection AddRelayTwins(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<TwinOptions>(configuration, TwinOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TwinOptions>, TwinOptionsValidator>());
        services.AddBoundOptions<TwinOptions>();
        services.AddSingleton(static sp => TwinStore.Open(sp.GetRequiredService<RelayDataDirectory>().FullPath));
        services.AddRelayMetrics<TwinMetrics>();
        services.AddSingleton<TwinService>();
        services.AddSingleton<TwinMqttObserver>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<TwinMqttObserver>());
        services.AddSingleton<IMqttClientObserver>(static s => s.GetRequiredService<TwinMqttObserver>());
        services.AddHostedService(static s => s.GetRequiredService<TwinService>());
        return services;
    }
}
