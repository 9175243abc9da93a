using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Server.Hosting;
using Relay.Server.Telemetry;

namespace Relay.Server.Api;

/// <summary>Checks <c>Relay:Api</c>.</summary>
internal sealed class ApiOptionsValidator : IValidateOptions<ApiOptions>
{
    public ValidateOptionsResult Validate(string? name, ApiOptions options)
    {
        var errors = new List<string>();
        if (options.MaxRequestBodyBytes is < 1024 or > 64 * 1024 * 1024)
        {
            errors.Add($"Relay:Api:MaxRequestBodyBytes: must be between 1024 and 67108864 (was {options.MaxRequestBodyBytes})");
        }

        if (options.RateLimit.Enabled && !(options.RateLimit.RequestsPerSecond > 0))
        {
            errors.Add($"Relay:Api:RateLimit:RequestsPerSecond: must be above 0 (was {options.RateLimit.RequestsPerSecond}); set Relay:Api:RateLimit:Enabled=false to turn the limit off");
        }

        if (options.RateLimit.Enabled && options.RateLimit.Burst < 1)
        {
            errors.Add($"Relay:Api:RateLimit:Burst: must be at least 1 (was {options.RateLimit.Burst})");
        }

        if (options.AuthFailuresPerMinutePerIp is < 0 or > 100_000)
        {
            errors.Add($"Relay:Api:AuthFailuresPerMinutePerIp: must be between 0 (off) and 100000 (was {options.AuthFailuresPerMinutePerIp})");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>
/// Stores the hash of an admin token minted by this start once the server is up: a start that fails (a port in
/// use) must not store a token nobody was shown. Being a hosted service, it also loads the token file before
/// anything listens, so a damaged file stops the start.
/// </summary>
internal sealed class AdminTokenFile(AdminTokens tokens) : IHostedLifecycleService
{
    public Task StartedAsync(CancellationToken cancellationToken)
    {
        tokens.PersistGenerated();
        return Task.CompletedTask;
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>Registers and maps the operator API (<c>/v1</c> devices, commands, tokens, TURN credentials, <c>/openapi.json</c>).</summary>
internal static class ApiServices
{
    /// <summary>
    /// Singletons: <see cref="ApiOptions"/>, <see cref="AdminTokens"/> and <see cref="ApiTokenStore"/> (files in
    /// the data directory), <see cref="ApiRateLimiter"/>, <see cref="ApiMetrics"/>. The endpoints also use what
    /// <c>AddRelayMqtt</c>, <c>AddRelayPush</c> and <c>AddRelayStunTurn</c> register.
    /// </summary>
    public static IServiceCollection AddRelayApi(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<ApiOptions>(configuration, ApiOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ApiOptions>, ApiOptionsValidator>());
        services.AddBoundOptions<ApiOptions>();
        services.AddSingleton(static sp => AdminTokens.Load(sp.GetRequiredService<ApiOptions>(), sp.GetRequiredService<RelayDataDirectory>().FullPath));
        services.AddHostedService<AdminTokenFile>();
        services.AddRelayMetrics<ApiMetrics>();
        services.AddSingleton(static sp => new ApiRateLimiter(sp.GetRequiredService<ApiOptions>().RateLimit, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(static sp => ApiTokenStore.Load(sp.GetRequiredService<RelayDataDirectory>().FullPath, sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton(static sp => new ApiAuthFailureLimiter(sp.GetRequiredService<ApiOptions>().AuthFailuresPerMinutePerIp, sp.GetRequiredService<ApiMetrics>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<ApiAuthFailureLimiter>>()));
        return services;
    }

    public static WebApplication MapRelayApi(this WebApplication app)
    {
        TurnCredentialsEndpoint.Map(app);
        DeviceEndpoints.Map(app);
        TokenEndpoints.Map(app);
        CommandEndpoints.Map(app);
        ScheduleEndpoints.Map(app);
        TwinEndpoints.Map(app);
        OpenApiDocument.Map(app);
        return app;
    }
}
