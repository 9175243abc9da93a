using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Rendezvous.Introductions;
using Relay.Server.Devices;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Turn;
using Relay.Server.Telemetry;

namespace Relay.Server.Rendezvous;

/// <summary>Checks <c>Relay:Rendezvous</c> (also when it is off, so a mistake shows before it is switched on).</summary>
internal sealed class RendezvousOptionsValidator : IValidateOptions<RendezvousOptions>
{
    public ValidateOptionsResult Validate(string? name, RendezvousOptions options)
    {
        var errors = new List<string>();
        options.Validate(errors);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Registers rendezvous signalling (docs/rendezvous.md): options, metrics, the service (MQTT observer + loop) and NAT-aware presence.</summary>
internal static class RendezvousServices
{
    /// <summary>
    /// Needs the MQTT plane (<c>AddRelayMqtt</c>) and TURN: with rendezvous and MQTT on, the broker's
    /// <see cref="IDevicePresence"/> is decorated with the devices' NAT reports, and TURN gets a generated REST
    /// secret when none is configured. Off, nothing listens to the devices' rendezvous topics: the switches are
    /// read here because they decide which services exist.
    /// </summary>
    public static IServiceCollection AddRelayRendezvous(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<RendezvousOptions>(configuration, RendezvousOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RendezvousOptions>, RendezvousOptionsValidator>());
        services.AddBoundOptions<RendezvousOptions>();
        services.AddRelayMetrics<RendezvousMetrics>();
        var enabled = configuration.IsSwitchedOn(RendezvousOptions.SectionName + ":Enabled") && configuration.IsSwitchedOn(MqttOptions.SectionName + ":Enabled");
        if (!enabled)
        {
            return services;
        }

        services.AddSingleton(static sp => EphemeralTurnSecret.For(sp.GetRequiredService<IOptions<TurnOptions>>().Value));
        services.AddSingleton<NatReports>();
        services.AddSingleton<RendezvousService>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<RendezvousService>());
        services.AddHostedService(static s => s.GetRequiredService<RendezvousService>());
        services.Decorate<IDevicePresence>(static (s, broker) => new RendezvousPresence(broker, s.GetRequiredService<NatReports>()));
        return services;
    }
}
