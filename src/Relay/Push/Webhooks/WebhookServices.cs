using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Telemetry;

namespace Relay.Server.Push.Webhooks;

/// <summary><c>Relay:Webhooks</c>: the receivers, one list entry each (<c>Relay:Webhooks:0:Url</c>, ...).</summary>
internal sealed class WebhookReceiversOptions
{
    /// <summary>The configured receivers, in order (the index names each in logs and metrics).</summary>
    public List<WebhookOptions> Receivers { get; } = [];

    /// <summary>Binds each entry on its own, so a problem in one does not hide the others'.</summary>
    public static void Bind(IConfigurationSection section, WebhookReceiversOptions options, List<string> errors)
    {
        foreach (var entry in section.GetChildren())
        {
            var receiver = new WebhookOptions();
            StrictBinder.Bind(entry, receiver, strict: true, errors);
            options.Receivers.Add(receiver);
        }
    }
}

/// <summary>Checks every <c>Relay:Webhooks:N</c> entry, naming its index.</summary>
internal sealed class WebhookOptionsValidator : IValidateOptions<WebhookReceiversOptions>
{
    public ValidateOptionsResult Validate(string? name, WebhookReceiversOptions options)
    {
        var errors = new List<string>();
        for (var i = 0; i < options.Receivers.Count; i++)
        {
            Validate($"{WebhookOptions.SectionName}:{i}", options.Receivers[i], errors);
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void Validate(string key, WebhookOptions options, List<string> errors)
    {
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

        void Range(int value, int min, int max, string name)
        {
            if (value < min || value > max)
            {
                errors.Add($"{key}:{name}: must be between {min} and {max} (was {value})");
            }
        }
    }
}

/// <summary>Binds <c>Relay:Webhooks</c> and registers the dispatcher as the <see cref="IPushEventSink"/>.</summary>
internal static class WebhookServices
{
    /// <summary>
    /// Singletons: <see cref="WebhookMetrics"/>, <see cref="WebhookDispatcher"/> (also as
    /// <see cref="IPushEventSink"/> and as a hosted service). With no webhooks configured the sink does nothing.
    /// </summary>
    public static IServiceCollection AddPushWebhooks(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayOptions<WebhookReceiversOptions>(configuration, WebhookOptions.SectionName, WebhookReceiversOptions.Bind);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<WebhookReceiversOptions>, WebhookOptionsValidator>());
        services.AddRelayMetrics(static sp => new WebhookMetrics(Receivers(sp).Count, sp.GetRequiredService<IMeterFactory>()));
        services.AddSingleton(static sp => new WebhookDispatcher(
            Receivers(sp),
            sp.GetRequiredService<WebhookMetrics>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger("Relay.Server.Push.Webhooks") ?? NullLogger.Instance,
            sp.GetService<TimeProvider>() ?? TimeProvider.System));
        services.AddSingleton<IPushEventSink>(static sp => sp.GetRequiredService<WebhookDispatcher>());
        services.AddHostedService(static sp => sp.GetRequiredService<WebhookDispatcher>());
        return services;
    }

    private static List<WebhookOptions> Receivers(IServiceProvider services) =>
        services.GetRequiredService<IOptions<WebhookReceiversOptions>>().Value.Receivers;
}
