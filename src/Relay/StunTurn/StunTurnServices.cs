using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;
using Relay.Server.Turn;
using Relay.Server.Telemetry;

namespace Relay.Server.StunTurn;

/// <summary>The port-3478 front door: STUN (RFC 8489) and TURN (RFC 8656) on one port over UDP, TCP and TLS.</summary>
internal static class StunTurnServices
{
    /// <summary>
    /// Registers <c>Relay:Stun</c>, the Binding service, the TURN relay (<c>Relay:Turn</c>), the UDP listener and
    /// the TCP/TLS connection handler. One hosted service starts the relay and then the UDP listener, so the
    /// relay is running before the first datagram can reach it, whatever else is registered around them.
    /// </summary>
    public static IServiceCollection AddRelayStunTurn(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddRelayHosting(configuration);
        services.AddRelayOptions<StunOptions>(configuration, StunOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<StunOptions>, StunOptionsValidator>());
        services.AddRelayMetrics<StunMetrics>();
        services.AddSingleton<StunBindingService>();
        services.AddRelayTurn(configuration);
        services.AddSingleton<StunTurnUdpListener>();
        services.AddSingleton<StunTurnTcpConnectionHandler>();
        services.AddHostedService<StunTurnStartup>();
        return services;
    }

    /// <summary>
    /// TCP (and, with a certificate, TLS) listeners on the STUN ports. With specific listen addresses the
    /// RFC 5780 alternate endpoints are served too.
    /// </summary>
    public static KestrelServerOptions ListenStunTurn(this KestrelServerOptions kestrel, StunOptions stun, ServerCertificate certificate)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        ArgumentNullException.ThrowIfNull(stun);
        ArgumentNullException.ThrowIfNull(certificate);
        var addresses = ListenAddresses.Parse(stun.ListenAddresses);
        if (addresses is null)
        {
            kestrel.ListenAnyIP(stun.Port, UseStunTurn);
            if (certificate.Enabled)
            {
                kestrel.ListenAnyIP(stun.TlsPort, listen => UseStunTurnTls(listen, certificate));
            }

            return kestrel;
        }

        var endpoints = new List<IPEndPoint>();
        if (Rfc5780Addresses.From(stun) is { } rfc5780)
        {
            endpoints.AddRange(rfc5780.Endpoints.Select(static e => e.ToIPEndPoint()));
        }

        foreach (var address in addresses)
        {
            var endpoint = new IPEndPoint(address, stun.Port);
            if (!endpoints.Contains(endpoint))
            {
                endpoints.Add(endpoint);
            }
        }

        foreach (var endpoint in endpoints)
        {
            kestrel.Listen(endpoint, UseStunTurn);
        }

        if (certificate.Enabled)
        {
            foreach (var address in addresses)
            {
                kestrel.Listen(address, stun.TlsPort, listen => UseStunTurnTls(listen, certificate));
            }
        }

        return kestrel;
    }

    private static void UseStunTurn(ListenOptions listen) => listen.UseConnectionHandler<StunTurnTcpConnectionHandler>();

    private static void UseStunTurnTls(ListenOptions listen, ServerCertificate certificate)
    {
        listen.UseRelayTls(certificate);
        listen.UseConnectionHandler<StunTurnTcpConnectionHandler>();
    }
}

/// <summary>
/// Starts the TURN relay's loops, then binds the UDP listener that hands it packets; stops them in the
/// reverse order. The UDP listener binds in its StartAsync, so a port conflict still fails the host.
/// </summary>
internal sealed class StunTurnStartup(TurnRelay relay, StunTurnUdpListener udp) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await relay.StartAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await udp.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // A port conflict: the relay's loops have nothing to serve.
            await relay.StopAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await udp.StopAsync(cancellationToken).ConfigureAwait(false);
        await relay.StopAsync(cancellationToken).ConfigureAwait(false);
    }
}
