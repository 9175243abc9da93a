using System.IO.Pipelines;
using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Mqtt;

internal sealed partial class MqttBroker
{
    /// <summary>
    /// Serves one accepted connection, whatever carries it (our socket transport, Kestrel TCP/TLS, WebSocket),
    /// until it ends. False when Relay:Mqtt:MaxConnectionsPerIp refused it before anything was read: the caller
    /// closes it without a word.
    /// </summary>
    public async Task<bool> ServeAsync(IDuplexPipe transport, MqttTransport kind, IPEndPoint? remote, X509Certificate2? clientCertificate, ILogger<MqttSession> logger)
    {
        var ip = remote?.Address is { IsIPv4MappedToIPv6: true } mapped ? mapped.MapToIPv4() : remote?.Address;
        if (ip is not null && !TryEnterIp(ip))
        {
            return false;
        }

        _metrics.Connection(kind, +1);
        try
        {
            await new MqttSession(this, transport, kind, remote, clientCertificate, logger).RunAsync().ConfigureAwait(false);
        }
        finally
        {
            _metrics.Connection(kind, -1);
            if (ip is not null)
            {
                LeaveIp(ip);
            }
        }

        return true;
    }
}
