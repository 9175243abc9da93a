using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Mqtt.Storage;

/// <summary>Registers the embedded SQLite stores and the identity services.</summary>
internal static class MqttPersistence
{
    /// <summary>
    /// Registers, as singletons by interface, <see cref="IMqttSessionStore"/>, <see cref="IMqttRetainedStore"/>,
    /// <see cref="IDeviceRegistry"/> (all on one <c>mqtt.db</c> in <paramref name="dataDirectory"/>),
    /// <see cref="IMqttAuthenticator"/>, <see cref="IMqttAuthorizer"/>, plus <see cref="MqttIdentityMetrics"/>
    /// and <see cref="MqttDatabase"/>. Call it after any in-memory registrations: the last registration
    /// of an interface wins. ACL rules, service accounts and the hook are validated here, so a bad value
    /// throws <see cref="Configuration.RelayConfigurationException"/> before anything listens. The
    /// container disposes <see cref="MqttDatabase"/> at shutdown, which commits every queued write first.
    /// </summary>
    public static IServiceCollection AddSqlite(IServiceCollection services, string dataDirectory, MqttOptions options)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        ArgumentNullException.ThrowIfNull(options);
        var rules = MqttAclAuthorizer.Compile(options);
        MqttAuthenticator.Validate(options);

        services.AddSingleton(sp => MqttDatabase.Open(dataDirectory, Logger(sp, "Relay.Server.Mqtt.Storage")));
        services.AddSingleton(sp => new SlowHashPool(
            options.SlowHashConcurrency > 0 ? options.SlowHashConcurrency : SlowHashPool.DefaultConcurrency,
            options.SlowHashMaxWaiting,
            TimeSpan.FromSeconds(Math.Max(1, options.ConnectTimeoutSeconds / 2.0)),
            Time(sp)));
        services.AddSingleton(sp => new MqttIdentityMetrics(sp.GetService<IMeterFactory>(), sp.GetRequiredService<SlowHashPool>()));
        services.AddSingleton<IMqttSessionStore>(sp => new SqliteMqttSessionStore(sp.GetRequiredService<MqttDatabase>()));
        services.AddSingleton<IMqttRetainedStore>(sp => new SqliteMqttRetainedStore(sp.GetRequiredService<MqttDatabase>(), Time(sp)));
        services.AddSingleton<IDeviceRegistry>(sp => new SqliteDeviceRegistry(sp.GetRequiredService<MqttDatabase>(), Time(sp), pool: sp.GetRequiredService<SlowHashPool>()));
        services.AddSingleton<IMqttAuthenticator>(sp => new MqttAuthenticator(
            options, sp.GetRequiredService<IDeviceRegistry>(), sp.GetRequiredService<MqttIdentityMetrics>(), Logger(sp, "Relay.Server.Mqtt.Identity"), Time(sp)));
        services.AddSingleton<IMqttAuthorizer>(sp => MqttAclAuthorizer.FromCompiled(rules, sp.GetRequiredService<MqttIdentityMetrics>()));
        return services;
    }

    private static TimeProvider Time(IServiceProvider services) => services.GetService<TimeProvider>() ?? TimeProvider.System;

    private static ILogger Logger(IServiceProvider services, string category) =>
        services.GetService<ILoggerFactory>()?.CreateLogger(category) ?? NullLogger.Instance;
}
