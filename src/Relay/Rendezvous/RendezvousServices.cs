using System.Security.Cryptography;
using Relay.Rendezvous.Introductions;
using Relay.Server.Devices;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Push;

namespace Relay.Server.Rendezvous;

/// <summary>Binds <c>Relay:Rendezvous</c> strictly and validates it (RelayConfiguration lists the problems with the others).</summary>
internal static class RendezvousOptionsBinder
{
    public static RendezvousOptions Bind(IConfiguration configuration, List<string> errors)
    {
        var options = new RendezvousOptions();
        try
        {
            configuration.GetSection(RendezvousOptions.SectionName).Bind(options, binder => binder.ErrorOnUnknownConfiguration = true);
        }
        catch (InvalidOperationException e)
        {
            errors.Add($"{RendezvousOptions.SectionName}: {e.Message}");
            return options;
        }

        options.Validate(errors);
        return options;
    }
}

/// <summary>
/// The TURN secret generated at startup when rendezvous is on and <c>Relay:Turn:SharedSecrets</c> is empty:
/// devices then get working credentials over MQTT with no setup (TurnCredentialStore accepts it). It lives
/// in memory only, so credentials minted from it stop working when the server restarts; devices ask again.
/// </summary>
internal sealed record RendezvousTurnSecret(byte[]? Secret);

/// <summary>Registers rendezvous signalling (docs/rendezvous.md): options, metrics, the service (MQTT observer + loop) and NAT-aware presence.</summary>
internal static class RendezvousServices
{
    /// <summary>Call after the MQTT plane's registration: presence is decorated with the devices' NAT reports.</summary>
    public static void Add(IServiceCollection services, IConfiguration configuration, RelayConfiguration relay)
    {
        // Validated already by RelayConfiguration.Load (same binder); errors here would have stopped the start.
        var options = RendezvousOptionsBinder.Bind(configuration, []);
        var enabled = options.Enabled && relay.Mqtt.Enabled;
        services.AddSingleton(options);
        services.AddSingleton<RendezvousMetrics>();
        services.AddSingleton(new RendezvousTurnSecret(enabled && relay.Turn.Enabled && relay.Turn.SharedSecrets.Count == 0 ? RandomNumberGenerator.GetBytes(32) : null));
        if (!enabled)
        {
            return;
        }

        services.AddSingleton<NatReports>();
        services.AddSingleton<RendezvousService>();
        services.AddSingleton<IMqttMessageObserver>(static s => s.GetRequiredService<RendezvousService>());
        services.AddHostedService(static s => s.GetRequiredService<RendezvousService>());

        // Last registration wins: the API's presence now carries the NAT report.
        services.AddSingleton<IDevicePresence>(static s => new RendezvousPresence(s.GetRequiredService<MqttBroker>(), s.GetRequiredService<NatReports>()));
    }
}
