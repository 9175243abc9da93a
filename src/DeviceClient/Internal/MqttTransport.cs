using System.Net.Security;
using System.Net.Sockets;
using System.Net.WebSockets;

namespace Relay.DeviceClient.Internal;

/// <summary>Opens the byte stream MQTT runs over: TCP, TLS (SNI, client certificates) or WebSocket (MQTT §6).</summary>
internal static class MqttTransport
{
    public static async Task<Stream> OpenAsync(DeviceClientOptions options, CancellationToken cancellationToken)
    {
        var uri = options.Server;
        switch (uri.Scheme.ToLowerInvariant())
        {
            case "mqtt":
            case "tcp":
                return await OpenTcpAsync(uri.Host, uri.IsDefaultPort ? 1883 : uri.Port, cancellationToken).ConfigureAwait(false);
            case "mqtts":
            case "ssl":
            case "tls":
            {
                var tcp = await OpenTcpAsync(uri.Host, uri.IsDefaultPort ? 8883 : uri.Port, cancellationToken).ConfigureAwait(false);
                var tls = new SslStream(tcp, leaveInnerStreamOpen: false);
                try
                {
                    await tls.AuthenticateAsClientAsync(
                        new SslClientAuthenticationOptions
                        {
                            TargetHost = uri.IdnHost, // SNI
                            ClientCertificates = options.ClientCertificates,
                            RemoteCertificateValidationCallback = options.ServerCertificateValidation,
                        },
                        cancellationToken).ConfigureAwait(false);
                    return tls;
                }
                catch
                {
                    await tls.DisposeAsync().ConfigureAwait(false);
                    throw;
                }
            }

            case "ws":
            case "wss":
            {
                var ws = new ClientWebSocket();
                try
                {
                    // MQTT 5.0 §6 / 3.1.1 §6: the subprotocol is "mqtt" and the data rides in binary frames.
                    ws.Options.AddSubProtocol("mqtt");
                    if (options.ClientCertificates is not null)
                    {
                        ws.Options.ClientCertificates = options.ClientCertificates;
                    }

                    if (options.ServerCertificateValidation is not null)
                    {
                        ws.Options.RemoteCertificateValidationCallback = options.ServerCertificateValidation;
                    }

                    await ws.ConnectAsync(uri, cancellationToken).ConfigureAwait(false);
                    if (ws.SubProtocol != "mqtt")
                    {
                        throw new IOException($"The WebSocket server did not accept the \"mqtt\" subprotocol (got \"{ws.SubProtocol}\").");
                    }

                    return new WebSocketByteStream(ws);
                }
                catch
                {
                    ws.Dispose();
                    throw;
                }
            }

            default:
                throw new NotSupportedException($"Unsupported server scheme \"{uri.Scheme}\" (use mqtt, mqtts, ws or wss).");
        }
    }

    private static async Task<Stream> OpenTcpAsync(string host, int port, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(host, port, cancellationToken).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}

/// <summary>
/// A <see cref="ClientWebSocket"/> as a byte stream (net8.0 has no WebSocketStream). MQTT packets may span
/// WebSocket frames and a frame may hold several packets (MQTT §6), so message boundaries are ignored.
/// </summary>
internal sealed class WebSocketByteStream(ClientWebSocket socket) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (socket.State is not (WebSocketState.Open or WebSocketState.CloseSent))
            {
                return 0;
            }

            var result = await socket.ReceiveAsync(buffer, cancellationToken).ConfigureAwait(false);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                return 0;
            }

            if (result.MessageType == WebSocketMessageType.Text)
            {
                // MQTT §6: "MQTT Control Packets MUST be sent in WebSocket binary data frames".
                throw new IOException("The server sent a WebSocket text frame; MQTT uses binary frames only.");
            }

            if (result.Count > 0 || buffer.IsEmpty)
            {
                return result.Count;
            }
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        socket.SendAsync(buffer, WebSocketMessageType.Binary, endOfMessage: true, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("Use ReadAsync.");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("Use WriteAsync.");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override async ValueTask DisposeAsync()
    {
        if (socket.State == WebSocketState.Open)
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or IOException)
            {
                // The peer is gone already; nothing to tell it.
            }
        }

        socket.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            socket.Dispose();
        }

        base.Dispose(disposing);
    }
}
