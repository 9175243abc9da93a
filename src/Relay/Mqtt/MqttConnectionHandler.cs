using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Relay.Server.Mqtt;

/// <summary>MQTT over TLS (MQTT 5.0 §4.2), and over TCP when <c>Relay:Mqtt:TcpTransport=Kestrel</c>, on Kestrel's pooled socket pipes.</summary>
internal sealed class MqttConnectionHandler(MqttConnectionServices services, ILogger<MqttConnection> logger) : ConnectionHandler
{
    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var transport = connection.Features.Get<ITlsHandshakeFeature>() is null ? MqttTransport.Tcp : MqttTransport.Tls;
        try
        {
            var certificate = connection.Features.Get<ITlsConnectionFeature>()?.ClientCertificate;
            if (MqttConnection.TryServe(services, connection.Transport, transport, connection.RemoteEndPoint as IPEndPoint, certificate, logger, connection.LocalEndPoint as IPEndPoint) is { } serving)
            {
                await serving.ConfigureAwait(false);
            }
            else
            {
                connection.Abort(new ConnectionAbortedException("Relay:Mqtt:MaxConnectionsPerIp"));
            }
        }
        finally
        {
            await connection.Transport.Input.CompleteAsync().ConfigureAwait(false);
            await connection.Transport.Output.CompleteAsync().ConfigureAwait(false);
        }
    }
}
