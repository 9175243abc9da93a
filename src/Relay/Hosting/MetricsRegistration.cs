namespace Relay.Server.Hosting;

/// <summary>
/// How a feature registers the class that owns its meter. Here rather than in Telemetry so that every feature,
/// Hosting's own TLS metrics included, can register without depending on how the metrics are exported.
/// </summary>
internal static class MetricsRegistration
{
    /// <summary>
    /// Registers a feature's metrics class (the one owner of its meter) as a singleton that is created when
    /// <c>/metrics</c> is mapped (Telemetry's <c>MapRelayMetrics</c>), so its instruments exist, showing zeros,
    /// before the feature first counts, even when the feature resolves it late (per request) or not at all.
    /// </summary>
    public static IServiceCollection AddRelayMetrics<TMetrics>(this IServiceCollection services, Func<IServiceProvider, TMetrics>? create = null)
        where TMetrics : class
    {
        if (create is null)
        {
            services.AddSingleton<TMetrics>();
        }
        else
        {
            services.AddSingleton(create);
        }

        services.AddSingleton(new FeatureMetrics(static sp => sp.GetRequiredService<TMetrics>()));
        return services;
    }
}

/// <summary>How to create one feature's metrics class; see <see cref="MetricsRegistration.AddRelayMetrics{TMetrics}"/>.</summary>
internal sealed record FeatureMetrics(Func<IServiceProvider, object> Create);
