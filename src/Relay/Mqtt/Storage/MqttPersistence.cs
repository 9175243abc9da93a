using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Telemetry;

namespace Relay.Server.Mqtt.Storage;

/// <summary>Registers the embedded SQLite stores and the identity services.</summary>
internal static class MqttPersistence
{
    /// <summary>
    /// Registers, as singletons by interface, <see cref="IMqttSessionStore"/>, <see cref="IMqttRetainedStore"/>,
    /// <see cref="IDeviceRegistry"/> (all on one <c>mqtt.db</c> in the <see cref="RelayDataDirectory"/>),
    /// <see cref="IMqttAuthenticator"/>, <see cref="IMqttAuthorizer"/>, plus <see cref="MqttIdentityMetrics"/>
    /// and <see cref="MqttDatabase"/>, all built from <see cref="IOptions{MqttOptions}"/>. Call it after any
    /// in-memory registrations: the last registration of an interface wins. ACL rules, service accounts and the
    /// hook are checked by <see cref="MqttOptionsValidator"/> at start, before anything is opened. The container
    /// disposes <see cref="MqttDatabase"/> at shutdown, which commits every queued write first.
    /// </summary>
    public static IServiceCollection AddSqlite(IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddSingleton(sp => MqttDatabase.Open(sp.GetRequiredService<RelayDataDirectory>().FullPath, Logger(sp, "Relay.Server.Mqtt.Storage")));
        services.AddSingleton(sp =>
        {
            var options = Options(sp);
            return new SlowHashPool(
                options.SlowHashConcurrency > 0 ? options.SlowHashConcurrency : SlowHashPool.DefaultConcurrency,
                options.SlowHashMaxWaiting,
                TimeSpan.FromSeconds(Math.Max(1, options.ConnectTimeoutSeconds / 2.0)),
                Time(sp));
        });
        services.AddRelayMetrics(static sp => new MqttIdentityMetrics(sp.GetService<IMeterFactory>(), sp.GetRequiredService<SlowHashPool>()));
        services.AddSingleton<IMqttSessionStore>(sp => new SqliteMqttSessionStore(sp.GetRequiredService<MqttDatabase>()));
        services.AddSingleton<IMqttRetainedStore>(sp => new SqliteMqttRetainedStore(sp.GetRequiredService<MqttDatabase>(), Time(sp)));
        services.AddSingleton<IDeviceRegistry>(sp => new SqliteDeviceRegistry(sp.GetRequiredService<MqttDatabase>(), Time(sp), pool: sp.GetRequiredService<SlowHashPool>()));
        services.AddSingleton<IMqttAuthenticator>(sp => new MqttAuthenticator(
            Options(sp), sp.GetRequiredService<IDeviceRegistry>(), sp.GetRequiredService<MqttIdentityMetrics>(), Logger(sp, "Relay.Server.Mqtt.Identity"), Time(sp)));
        services.AddSingleton<IMqttAuthorizer>(sp => MqttAclAuthorizer.FromCompiled(MqttAclAuthorizer.Compile(Options(sp)), sp.GetRequiredService<MqttIdentityMetrics>()));
        return services;
    }

    private static MqttOptions Options(IServiceProvider services) => services.GetRequiredService<IOptions<MqttOptions>>().Value;

    private static TimeProvider Time(IServiceProvider services) => services.GetService<TimeProvider>() ?? TimeProvider.System;

    private static ILogger Logger(IServiceProvider services, string category) =>
        services.GetService<ILoggerFactory>()?.CreateLogger(category) ?? NullLogger.Instance;
}
