using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;

namespace Relay.Server.Events;

/// <summary>Checks <c>Relay:Events</c>.</summary>
internal sealed class EventsOptionsValidator : IValidateOptions<EventsOptions>
{
    public ValidateOptionsResult Validate(string? name, EventsOptions options)
    {
        var errors = new List<string>();
        options.Validate(errors);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Registers the live event hub (<see cref="IRelayEvents"/> for publishers, <see cref="RelayEventHub"/> for subscribers).</summary>
internal static class EventsServices
{
    public static IServiceCollection AddRelayEvents(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (services.Any(static d => d.ServiceType == typeof(RelayEventHub)))
        {
            return services;
        }

        services.AddRelayHosting(configuration);
        services.AddRelayOptions<EventsOptions>(configuration, EventsOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<EventsOptions>, EventsOptionsValidator>());
        services.AddRelayMetrics<RelayEventHub>();
        services.AddSingleton<IRelayEvents>(static sp => sp.GetRequiredService<RelayEventHub>());
        return services;
    }
}
