using System.Globalization;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;

namespace Relay.Server.Connectors;

/// <summary>
/// <c>Relay:Connectors</c>: three lists, one entry per target (<c>Relay:Connectors:Postgres:0:ConnectionString</c>,
/// <c>Relay:Connectors:Redis:0:Configuration</c>, <c>Relay:Connectors:Http:0:Url</c>, ...).
/// </summary>
internal sealed class ConnectorsOptions
{
    public const string SectionName = "Relay:Connectors";

    public List<PostgresConnectorOptions> Postgres { get; } = [];

    public List<RedisConnectorOptions> Redis { get; } = [];

    public List<HttpConnectorOptions> Http { get; } = [];

    /// <summary>Every entry, with its default name filled in, in a fixed order (Postgres, Redis, Http).</summary>
    public IReadOnlyList<ConnectorOptions> All => [.. Postgres, .. Redis, .. Http];

    /// <summary>Binds each entry on its own (strictly), so a problem in one does not hide the others'.</summary>
    public static void Bind(IConfigurationSection section, ConnectorsOptions options, List<string> errors)
    {
        foreach (var list in section.GetChildren())
        {
            switch (list.Key.ToLowerInvariant())
            {
                case "postgres":
                    BindList(list, options.Postgres, errors);
                    break;
                case "redis":
                    BindList(list, options.Redis, errors);
                    break;
                case "http":
                    BindList(list, options.Http, errors);
                    break;
                default:
                    // MongoDB and Elasticsearch are named because operators of other brokers will look for them.
                    errors.Add($"{list.Path}: unknown connector kind; use Postgres, Redis or Http (there is no MongoDB or Elasticsearch connector)");
                    break;
            }
        }
    }

    private static void BindList<T>(IConfigurationSection list, List<T> entries, List<string> errors)
        where T : ConnectorOptions, new()
    {
        foreach (var child in list.GetChildren().OrderBy(static c => Index(c.Key) ?? int.MaxValue))
        {
            if (Index(child.Key) is null)
            {
                errors.Add($"{child.Path}: expected a list index (…:{list.Key}:0:...)");
                continue;
            }

            var entry = new T();
            StrictBinder.Bind(child, entry, strict: true, errors);
            if (entry.Name.Length == 0)
            {
                entry.Name = $"{entry.Kind}-{entries.Count}";
            }

            entries.Add(entry);
        }
    }

    private static int? Index(string key) => int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out var index) ? index : null;
}

/// <summary>Checks every entry, naming its key, and that names (metric labels, spill directories) are unique.</summary>
internal sealed class ConnectorsOptionsValidator : IValidateOptions<ConnectorsOptions>
{
    public ValidateOptionsResult Validate(string? name, ConnectorsOptions options)
    {
        var errors = new List<string>();
        Check("Postgres", options.Postgres);
        Check("Redis", options.Redis);
        Check("Http", options.Http);
        foreach (var duplicate in options.All.GroupBy(static c => c.Name, StringComparer.Ordinal).Where(static g => g.Count() > 1))
        {
            errors.Add($"{ConnectorsOptions.SectionName}: the name '{duplicate.Key}' is used by {duplicate.Count()} connectors; names must be unique");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);

        void Check<T>(string kind, List<T> entries)
            where T : ConnectorOptions
        {
            for (var i = 0; i < entries.Count; i++)
            {
                entries[i].Validate($"{ConnectorsOptions.SectionName}:{kind}:{i}", errors);
            }
        }
    }
}

/// <summary>Registers the connectors: options, metrics, and the hub (an MQTT message observer and a hosted service).</summary>
internal static class ConnectorServices
{
    public static IServiceCollection AddRelayConnectors(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (services.Any(static d => d.ServiceType == typeof(ConnectorHub)))
        {
            return services;
        }

        services.AddRelayHosting(configuration);
        services.AddRelayOptions<ConnectorsOptions>(configuration, ConnectorsOptions.SectionName, ConnectorsOptions.Bind);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ConnectorsOptions>, ConnectorsOptionsValidator>());
        services.AddRelayMetrics(static sp => new ConnectorMetrics(
            [.. sp.GetRequiredService<IOptions<ConnectorsOptions>>().Value.All.Select(static c => c.Name)],
            sp.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>()));
        services.AddSingleton<ConnectorHub>();
        services.AddSingleton<IMqttMessageObserver>(static sp => sp.GetRequiredService<ConnectorHub>());
        services.AddHostedService(static sp => sp.GetRequiredService<ConnectorHub>());
        return services;
    }

    /// <summary>The connectors' spill directory under the data directory.</summary>
    public static string SpillDirectory(string dataDirectory, string connectorName) => Path.Combine(dataDirectory, "connectors", connectorName);
}
