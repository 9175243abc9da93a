using System.Net.Security;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>Registers what every feature may depend on: <c>Relay</c>, <c>Relay:Http</c>, <c>Relay:Tls</c>, the data directory, the certificate and the clock.</summary>
internal static class HostingServices
{
    /// <summary>Options (validated on start), <see cref="RelayDataDirectory"/>, <see cref="ServerCertificate"/> and <see cref="TimeProvider.System"/> unless a clock is registered.</summary>
    public static IServiceCollection AddRelayHosting(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);

        // Every feature calls this for what it depends on; the first call registers.
        if (services.Any(static d => d.ServiceType == typeof(RelayDataDirectory)))
        {
            return services;
        }

        // The root section is not strict: its children are the features' sections.
        services.AddRelayOptions<RelayOptions>(configuration, RelayOptions.SectionName, strict: false);
        services.AddRelayOptions<HttpOptions>(configuration, HttpOptions.SectionName);
        services.AddRelayOptions<TlsOptions>(configuration, TlsOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RelayOptions>, RelayOptionsValidator>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HttpOptions>, HttpOptionsValidator>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TlsOptions>, TlsOptionsValidator>());
        services.TryAddSingleton<RelayDataDirectory>();
        services.TryAddSingleton<ServerCertificate>();
        services.AddRelayMetrics<TlsMetrics>();
        services.AddRelayMetrics<HttpConnectionGuard>();
        services.AddHostedService<ServerCertificateWatch>();
        services.TryAddSingleton(TimeProvider.System);
        return services;
    }

    /// <summary>
    /// The operator HTTP listeners (<c>Relay:Http</c>): API, health, metrics, MQTT over WebSocket; plain on
    /// <c>Port</c>, and over TLS on <c>TlsPort</c> when a certificate is configured (review H5).
    /// </summary>
    /// <remarks>
    /// Kestrel's server-wide limits set here only act on HTTP: the MQTT and STUN/TURN listeners are connection
    /// handlers with their own. <paramref name="guard"/> caps the connections of these listeners alone.
    /// </remarks>
    public static KestrelServerOptions ListenRelayHttp(
        this KestrelServerOptions kestrel, HttpOptions http, ServerCertificate certificate, HttpConnectionGuard guard)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(certificate);
        ArgumentNullException.ThrowIfNull(guard);
        kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(http.RequestHeadersTimeoutSeconds);
        kestrel.Limits.MaxRequestBodySize = http.MaxRequestBodyBytes;
        var addresses = ListenAddresses.Parse(http.ListenAddresses);
        var tls = certificate.Enabled && http.TlsPort != 0;

        // The guard first, so a refused connection costs no TLS handshake.
        void Plain(ListenOptions listen) => listen.Use(guard.Limit);
        void Secure(ListenOptions listen)
        {
            listen.Use(guard.Limit);
            listen.UseRelayTls(certificate, http: true);
        }

        if (addresses is null)
        {
            kestrel.ListenAnyIP(http.Port, Plain);
            if (tls)
            {
                kestrel.ListenAnyIP(http.TlsPort, Secure);
            }

            return kestrel;
        }

        foreach (var address in addresses)
        {
            kestrel.Listen(address, http.Port, Plain);
            if (tls)
            {
                kestrel.Listen(address, http.TlsPort, Secure);
            }
        }

        return kestrel;
    }

    /// <summary>
    /// TLS on a listener with the certificate <paramref name="certificate"/> holds at the moment of each
    /// handshake (so a reload needs no restart), its intermediates, and TLS 1.2/1.3 only.
    /// <paramref name="configure"/> adds per-listener settings (client certificates). Non-HTTP listeners offer
    /// no ALPN protocol; HTTP ones get Kestrel's h2/http1.1.
    /// </summary>
    public static ListenOptions UseRelayTls(this ListenOptions listen, ServerCertificate certificate, bool http = false, Action<SslServerAuthenticationOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(listen);
        ArgumentNullException.ThrowIfNull(certificate);
        return listen.UseHttps(new TlsHandshakeCallbackOptions
        {
            OnConnection = _ =>
            {
                var options = certificate.ServerOptions();
                if (!http)
                {
                    options.ApplicationProtocols = [];
                }

                configure?.Invoke(options);
                return ValueTask.FromResult(options);
            },
        });
    }

    /// <summary>
    /// Wraps the registered <typeparamref name="TService"/> in <paramref name="decorate"/>, keeping its lifetime.
    /// Throws when there is nothing to decorate, so a registration made in the wrong order fails at once
    /// instead of leaving one of two registrations silently in force.
    /// </summary>
    public static IServiceCollection Decorate<TService>(this IServiceCollection services, Func<IServiceProvider, TService, TService> decorate)
        where TService : class
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(decorate);
        var index = -1;
        for (var i = 0; i < services.Count; i++)
        {
            if (services[i].ServiceType == typeof(TService) && !services[i].IsKeyedService)
            {
                index = index < 0 ? i : throw new InvalidOperationException($"{typeof(TService).Name} is registered more than once; decorate one registration");
            }
        }

        if (index < 0)
        {
            throw new InvalidOperationException($"{typeof(TService).Name} is not registered yet; register it before decorating it");
        }

        var inner = services[index];
        services[index] = ServiceDescriptor.Describe(typeof(TService), sp => decorate(sp, Create<TService>(sp, inner)), inner.Lifetime);
        return services;
    }

    private static TService Create<TService>(IServiceProvider services, ServiceDescriptor descriptor)
        where TService : class =>
        (TService)(descriptor.ImplementationInstance
            ?? descriptor.ImplementationFactory?.Invoke(services)
            ?? ActivatorUtilities.CreateInstance(services, descriptor.ImplementationType!));

    /// <summary>
    /// A feature's <c>Enabled</c> switch read while registering, for the features whose set of services
    /// depends on it. A value that is not a boolean reads as <paramref name="defaultValue"/> here; binding the
    /// section reports it at start.
    /// </summary>
    public static bool IsSwitchedOn(this IConfiguration configuration, string key, bool defaultValue = true)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        return bool.TryParse(configuration[key], out var value) ? value : defaultValue;
    }
}
