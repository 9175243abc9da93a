using System.Net;
using System.Net.Sockets;

namespace Relay.Server.Mqtt.Transport;

/// <summary>
/// The plain-TCP MQTT listener (Relay:Mqtt:Port) on our own socket transport (<see cref="SocketDuplexPipe"/>),
/// chosen with <c>Relay:Mqtt:TcpTransport=Sockets</c> (the default) because an idle device then costs the
/// server a fraction of a Kestrel connection. TLS stays on Kestrel. Binds in <see cref="StartAsync"/>, so a
/// port in use stops the host with a message naming the key.
/// </summary>
internal sealed partial class MqttSocketListener(MqttConnectionServices services, MqttOptions options, ILogger<MqttConnection> sessionLogger, ILogger<MqttSocketListener> logger) : IHostedService, IDisposable
{
    private const int Backlog = 1024;

    // How long a closing connection may take to accept its last bytes (a v5 DISCONNECT) before it is cut.
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(2);

    private readonly List<Socket> _listeners = [];
    private readonly List<Task> _acceptLoops = [];
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _open;

    // Clients exhausting descriptors can make accept fail 20 times a second: one line per 10 s (review M6).
    private readonly Primitives.LogThrottle _acceptLogThrottle = new(1);

    /// <summary>The bound endpoints (tests read the port from here when configured with 0).</summary>
    public IReadOnlyList<IPEndPoint> Endpoints => [.. _listeners.Select(static s => (IPEndPoint)s.LocalEndPoint!)];

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var addresses = options.ListenAddresses.Count == 0 ? [IPAddress.IPv6Any] : options.ListenAddresses.Select(IPAddress.Parse).ToArray();
        foreach (var address in addresses)
        {
            var endpoint = new IPEndPoint(address, options.Port);
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                if (address.Equals(IPAddress.IPv6Any))
                {
                    socket.DualMode = true;
                }

                // As Kestrel does: a restarted server can bind while old connections sit in TIME_WAIT.
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                socket.Bind(endpoint);
                socket.Listen(Backlog);
            }
            catch (SocketException e)
            {
                socket.Dispose();
                Dispose();
                throw new IOException($"Relay:Mqtt:Port: cannot listen on {endpoint} ({e.Message})", e);
            }

            _listeners.Add(socket);
        }

        foreach (var listener in _listeners)
        {
            _acceptLoops.Add(AcceptLoopAsync(listener));
        }

        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var listener in _listeners)
        {
            listener.Dispose();
        }

        await Task.WhenAll(_acceptLoops).ConfigureAwait(false);

        // The broker asked every session to end when the application began stopping; wait for them to
        // finish their goodbyes, as long as the host allows.
        if (Volatile.Read(ref _open) == 0)
        {
            _drained.TrySetResult();
        }

        await _drained.Task.WaitAsync(cancellationToken).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
    }

    public void Dispose()
    {
        foreach (var listener in _listeners)
        {
            listener.Dispose();
        }

        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // Out of descriptors or buffers: say so, give the system a moment, keep serving the others.
                services.Metrics.LimitHit(MqttLimit.Accept);
                if (_acceptLogThrottle.TryEnter(0, out var suppressed))
                {
                    LogAcceptFailed(logger, e.SocketErrorCode, e.Message, suppressed);
                }

                try
                {
                    await Task.Delay(50, _stopping.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                continue;
            }

            client.NoDelay = true;
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        Interlocked.Increment(ref _open);
        var pipe = new SocketDuplexPipe(client);
        try
        {
            if (MqttConnection.TryServe(services, pipe, MqttTransport.Tcp, client.RemoteEndPoint as IPEndPoint, null, sessionLogger, client.LocalEndPoint as IPEndPoint) is { } serving)
            {
                await serving.ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            // The peer vanished before the session could start (e.g. RemoteEndPoint on a reset socket).
            LogConnectionFailed(logger, e.Message);
        }
        finally
        {
            await pipe.CloseAsync(DrainTimeout).ConfigureAwait(false);
            if (Interlocked.Decrement(ref _open) == 0 && _stopping.IsCancellationRequested)
            {
                _drained.TrySetResult();
            }
        }
    }

    [LoggerMessage(EventId = 5201, Level = LogLevel.Warning, Message = "MQTT: accept failed ({Error}): {Message}; retrying ({Suppressed} more since the last such line)")]
    private static partial void LogAcceptFailed(ILogger logger, SocketError error, string message, long suppressed);

    [LoggerMessage(EventId = 5202, Level = LogLevel.Debug, Message = "MQTT: connection ended before its session started: {Message}")]
    private static partial void LogConnectionFailed(ILogger logger, string message);
}
