using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Relay.Server.Hosting;

namespace Relay.Server.Push.Webhooks;

/// <summary>Binds <c>Relay:Webhooks</c> and registers the dispatcher as the <see cref="IPushEventSink"/>.</summary>
internal static class WebhookServices
{
    /// <summary>
    /// Singletons: <see cref="WebhookMetrics"/>, <see cref="WebhookDispatcher"/> (also as
    /// <see cref="IPushEventSink"/> and as a hosted service). With no webhooks configured the sink
    /// does nothing. Bad entries throw <see cref="RelayConfigurationException"/> before anything listens.
    /// </summary>
    public static IReadOnlyList<WebhookOptions> Add(IServiceCollection services, IConfiguration configuration)
    {
        var webhooks = Load(configuration);
        services.AddSingleton(new WebhookMetrics(webhooks.Count));
        services.AddSingleton(sp => new WebhookDispatcher(
            webhooks,
            sp.GetRequiredService<WebhookMetrics>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger("Relay.Server.Push.Webhooks") ?? NullLogger.Instance,
            sp.GetService<TimeProvider>() ?? TimeProvider.System));
        services.AddSingleton<IPushEventSink>(static sp => sp.GetRequiredService<WebhookDispatcher>());
        services.AddHostedService(static sp => sp.GetRequiredService<WebhookDispatcher>());
        return webhooks;
    }

    public static IReadOnlyList<WebhookOptions> Load(IConfiguration configuration)
    {
        var webhooks = new List<WebhookOptions>();
        var errors = new List<string>();
        foreach (var section in configuration.GetSection(WebhookOptions.SectionName).GetChildren())
        {
            var key = section.Path;
            var options = new WebhookOptions();
            try
            {
                section.Bind(options, binder => binder.ErrorOnUnknownConfiguration = true);
            }
            catch (InvalidOperationException e)
            {
                errors.Add($"{key}: {e.Message}");
                continue;
            }

            if (!Uri.TryCreate(options.Url, UriKind.Absolute, out var url) || url.Scheme is not ("http" or "https"))
            {
                errors.Add($"{key}:Url: must be an absolute http or https URL (was '{options.Url}')");
            }

            if (string.IsNullOrEmpty(options.Secret))
            {
                errors.Add($"{key}:Secret: must be set (receivers verify X-Relay-Signature with it)");
            }

            foreach (var kind in options.Events)
            {
                if (!string.Equals(kind, WebhookOptions.CommandEvents, StringComparison.OrdinalIgnoreCase) && !string.Equals(kind, WebhookOptions.PresenceEvents, StringComparison.OrdinalIgnoreCase))
                {
                    errors.Add($"{key}:Events: '{kind}' is not an event kind; use command and/or presence");
                }
            }

            Range(options.MaxAttempts, 1, 100, "MaxAttempts");
            Range(options.InitialBackoffMilliseconds, 1, 3_600_000, "InitialBackoffMilliseconds");
            Range(options.MaxBackoffSeconds, 1, 86_400, "MaxBackoffSeconds");
            Range(options.TimeoutSeconds, 1, 300, "TimeoutSeconds");
            Range(options.QueueCapacity, 1, 1_000_000, "QueueCapacity");
            webhooks.Add(options);

            void Range(int value, int min, int max, string name)
            {
                if (value < min || value > max)
                {
                    errors.Add($"{key}:{name}: must be between {min} and {max} (was {value})");
                }
            }
        }

        if (errors.Count > 0)
        {
            throw new RelayConfigurationException("Invalid configuration:" + Environment.NewLine + "  " + string.Join(Environment.NewLine + "  ", errors));
        }

        return webhooks;
    }
}
