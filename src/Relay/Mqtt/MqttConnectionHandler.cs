using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Relay.Mqtt;

/// <summary>MQTT over TCP and TLS (MQTT 5.0 §4.2) on Kestrel's pooled socket pipes.</summary>
internal sealed class MqttConnectionHandler(MqttBroker broker, ILogger<MqttSession> logger) : ConnectionHandler
{
    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var transport = connection.Features.Get<ITlsHandshakeFeature>() is null ? MqttTransport.Tcp : MqttTransport.Tls;
        var remote = connection.RemoteEndPoint as IPEndPoint;
        var ip = remote?.Address is { IsIPv4MappedToIPv6: true } mapped ? mapped.MapToIPv4() : remote?.Address;
        if (ip is not null && !broker.TryEnterIp(ip))
        {
            // Refused before reading anything: no CONNACK, just a close.
            connection.Abort(new ConnectionAbortedException("Relay:Mqtt:MaxConnectionsPerIp"));
            return;
        }

        broker.Metrics.Connection(transport, +1);
        try
        {
            var certificate = connection.Features.Get<ITlsConnectionFeature>()?.ClientCertificate;
            var session = new MqttSession(broker, connection.Transport, transport, remote, certificate, logger);
            await session.RunAsync().ConfigureAwait(false);
        }
        finally
        {
            broker.Metrics.Connection(transport, -1);
            if (ip is not null)
            {
                broker.LeaveIp(ip);
            }

            await connection.Transport.Input.CompleteAsync().ConfigureAwait(false);
            await connection.Transport.Output.CompleteAsync().ConfigureAwait(false);
        }
    }
}
