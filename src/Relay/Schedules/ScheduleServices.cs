using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;

namespace Relay.Server.Schedules;

/// <summary>
/// Registers schedules: options, <c>schedules.db</c>, metrics, the <see cref="ScheduleRunner"/> (hosted) and the API's
/// <see cref="ScheduleService"/>.
/// </summary>
internal static class ScheduleServices
{
    /// <summary>Needs the push plane (<c>AddRelayPush</c>): each run is a command through its lifecycle.</summary>
    public static IServiceCollection AddRelaySchedules(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<ScheduleOptions>(configuration, ScheduleOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ScheduleOptions>, ScheduleOptionsValidator>());
        services.AddBoundOptions<ScheduleOptions>();
        services.AddSingleton(static sp => ScheduleStore.Open(sp.GetRequiredService<RelayDataDirectory>().FullPath));
        services.AddRelayMetrics<ScheduleMetrics>();
        services.AddSingleton<IScheduleDispatch, CommandDispatch>();
        services.AddSingleton<ScheduleRunner>();
        services.AddSingleton<ScheduleService>();
        services.AddHostedService(static s => s.GetRequiredService<ScheduleRunner>());
        return services;
    }
}
