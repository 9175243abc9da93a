using Relay.Server.Hosting;
using Relay.Server.Push.Commands;
using Relay.Server.Push.Webhooks;

namespace Relay.Server.Push;

/// <summary>The push plane: commands to devices (<c>Relay:Push</c>) and webhooks (<c>Relay:Webhooks</c>) that report them.</summary>
internal static class PushServices
{
    /// <summary>Needs the MQTT plane (<c>AddRelayMqtt</c>): commands travel over the devices' MQTT sessions.</summary>
    public static IServiceCollection AddRelayPush(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddPushCommands(configuration);
        services.AddPushWebhooks(configuration);
        return services;
    }
}
