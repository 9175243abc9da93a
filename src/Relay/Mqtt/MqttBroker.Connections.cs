using System.IO.Pipelines;
using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Server.Mqtt;

internal sealed partial class MqttBroker
{
    /// <summary>
    /// Starts serving one accepted connection, whatever carries it (our socket transport, Kestrel TCP/TLS), and
    /// returns the task that runs it; null when Relay:Mqtt:MaxConnectionsPerIp refused it before anything was
    /// read (the caller closes it without a word). Not async itself: an idle device's connection then carries
    /// one state machine fewer for its whole life; the session settles the accounting when it ends.
    /// </summary>
    public Task<MqttEndReason>? TryServe(IDuplexPipe transport, MqttTransport kind, IPEndPoint? remote, X509Certificate2? clientCertificate, ILogger<MqttConnection> logger, IPEndPoint? local = null)
    {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; logs, limits and presence want a.b.c.d.
        if (remote?.Address is { IsIPv4MappedToIPv6: true } mapped)
        {
            remote = new IPEndPoint(mapped.MapToIPv4(), remote.Port);
        }

        var ip = remote?.Address;
        if (ip is not null && !TryEnterIp(ip))
        {
            return null;
        }

        _metrics.Connection(kind, +1);
        return new MqttConnection(this, transport, kind, remote, clientCertificate, logger) { AccountedIp = ip, Accounted = true, LocalEndPoint = Unmapped(local) }.RunAsync();
    }

    /// <summary>Our address <paramref name="clientId"/>'s live connection arrived at; null when offline or unknown.</summary>
    public IPEndPoint? LocalEndPointOf(string clientId)
    {
        var state = FindSession(clientId);
        if (state is null)
        {
            return null;
        }

        lock (state.Sync)
        {
            return state.Connection?.LocalEndPoint;
        }
    }

    internal static IPEndPoint? Unmapped(IPEndPoint? endPoint) =>
        endPoint?.Address is { IsIPv4MappedToIPv6: true } mapped ? new IPEndPoint(mapped.MapToIPv4(), endPoint.Port) : endPoint;

    /// <summary>The end of a connection started by <see cref="TryServe"/>.</summary>
    public void EndConnection(MqttTransport kind, IPAddress? ip)
    {
        _metrics.Connection(kind, -1);
        if (ip is not null)
        {
            LeaveIp(ip);
        }
    }
}
