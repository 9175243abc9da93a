using System.IO.Pipelines;
using System.Net;
using System.Net.WebSockets;

namespace Relay.Server.Mqtt;

/// <summary>
/// MQTT over WebSocket (MQTT 5.0 §6): binary frames carry the byte stream, split and joined arbitrarily,
/// so the frames are poured into a pipe and the same session code reads it as it reads TCP.
/// </summary>
internal static class MqttWebSocketTransport
{
    public const string Path = "/mqtt";
    public const string SubProtocol = "mqtt";

    // Small segments; an idle connection holds none (see the zero-byte read in ReceiveAsync).
    private static readonly PipeOptions Options = new(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024, minimumSegmentSize: 2048, useSynchronizationContext: false);

    public static async Task HandleAsync(HttpContext context)
    {
        if (!context.WebSockets.IsWebSocketRequest)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return;
        }

        var services = context.RequestServices.GetRequiredService<MqttConnectionServices>();
        var logger = context.RequestServices.GetRequiredService<ILogger<MqttConnection>>();
        var remote = context.Connection.RemoteIpAddress is { } address ? new IPEndPoint(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address, context.Connection.RemotePort) : null;
        if (remote is not null && !services.Connections.PerIp.TryEnter(remote.Address))
        {
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return;
        }

        try
        {
            // [MQTT-6.0.0-3/4]: the server selects the "mqtt" subprotocol; older clients ask for "mqttv3.1",
            // and answering with a subprotocol a client did not offer would make it fail the handshake.
            var offered = context.WebSockets.WebSocketRequestedProtocols;
            var chosen = offered.Contains(SubProtocol) ? SubProtocol : offered.Contains("mqttv3.1") ? "mqttv3.1" : null;
            using var socket = await context.WebSockets.AcceptWebSocketAsync(chosen).ConfigureAwait(false);
            services.Metrics.Connection(MqttTransport.WebSocket, +1);
            var input = new Pipe(Options);
            var output = new Pipe(Options);
            using var stop = new CancellationTokenSource();
            var receive = ReceiveAsync(socket, input.Writer, stop.Token);
            var send = SendAsync(socket, output.Reader, stop.Token);
            try
            {
                var connection = new MqttConnection(services, new DuplexPipe(input.Reader, output.Writer), MqttTransport.WebSocket, remote, context.Connection.ClientCertificate, logger)
                {
                    LocalEndPoint = context.Connection.LocalIpAddress is { } localIp ? MqttConnections.Unmapped(new IPEndPoint(localIp, context.Connection.LocalPort)) : null,
                };
                await connection.RunAsync().ConfigureAwait(false);
            }
            finally
            {
                await output.Writer.CompleteAsync().ConfigureAwait(false);
                await input.Reader.CompleteAsync().ConfigureAwait(false);
                await send.ConfigureAwait(false);
                await stop.CancelAsync().ConfigureAwait(false);
                await receive.ConfigureAwait(false);
                services.Metrics.Connection(MqttTransport.WebSocket, -1);
            }
        }
        finally
        {
            if (remote is not null)
            {
                services.Connections.PerIp.Leave(remote.Address);
            }
        }
    }

    private static async Task ReceiveAsync(WebSocket socket, PipeWriter writer, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                // A zero-byte read waits for data without a buffer (as Kestrel's socket loop does), so an
                // idle WebSocket connection holds no pipe segment.
                var ready = await socket.ReceiveAsync(Memory<byte>.Empty, cancellationToken).ConfigureAwait(false);
                if (ready.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }

                var memory = writer.GetMemory(2048);
                var result = await socket.ReceiveAsync(memory, cancellationToken).ConfigureAwait(false);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }

                if (result.MessageType != WebSocketMessageType.Binary)
                {
                    // [MQTT-6.0.0-1]: MQTT travels in binary frames; a text frame closes the connection.
                    break;
                }

                writer.Advance(result.Count);
                var flush = await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
                if (flush.IsCompleted || flush.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            await writer.CompleteAsync().ConfigureAwait(false);
        }
    }

    private static async Task SendAsync(WebSocket socket, PipeReader reader, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                foreach (var segment in result.Buffer)
                {
                    await socket.SendAsync(segment, WebSocketMessageType.Binary, endOfMessage: true, cancellationToken).ConfigureAwait(false);
                }

                reader.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                {
                    break;
                }
            }

            if (socket.State == WebSocketState.Open)
            {
                await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            await reader.CompleteAsync().ConfigureAwait(false);
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
