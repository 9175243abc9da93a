using Relay.Server.Hosting;

namespace Relay.Server.Api;

/// <summary>Registers and maps the operator API (<c>/v1</c> devices and tokens, <c>/openapi.json</c>).</summary>
internal static class ApiServices
{
    /// <summary>
    /// Singletons: <see cref="ApiOptions"/>, <see cref="ApiTokenStore"/> (<c>api-tokens.json</c> in the data
    /// directory), <see cref="ApiRateLimiter"/>, <see cref="ApiMetrics"/>. <see cref="AdminTokens"/> is
    /// registered by the host. Bad values throw <see cref="RelayConfigurationException"/> before anything listens.
    /// </summary>
    public static void Add(IServiceCollection services, ApiOptions options, string dataDirectory)
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

        if (errors.Count > 0)
        {
            throw new RelayConfigurationException("Invalid configuration:" + Environment.NewLine + "  " + string.Join(Environment.NewLine + "  ", errors));
        }

        services.AddSingleton(options);
        services.AddSingleton<ApiMetrics>();
        services.AddSingleton(sp => new ApiRateLimiter(options.RateLimit, sp.GetService<TimeProvider>() ?? TimeProvider.System));
        services.AddSingleton(sp => ApiTokenStore.Load(dataDirectory, sp.GetService<TimeProvider>() ?? TimeProvider.System));
        services.AddSingleton(sp => new ApiAuthFailureLimiter(options.AuthFailuresPerMinutePerIp, sp.GetRequiredService<ApiMetrics>(), sp.GetService<TimeProvider>() ?? TimeProvider.System, sp.GetRequiredService<ILogger<ApiAuthFailureLimiter>>()));
    }

    public static void Map(WebApplication app)
    {
        DeviceEndpoints.Map(app);
        TokenEndpoints.Map(app);
        OpenApiDocument.Map(app);
    }
}
