namespace Relay.DeviceClient.Internal;

/// <summary>
/// The client's keep-alive (§3.1.2.10): a PINGREQ every interval, and a connection whose PINGRESP has not come
/// within the timeout is dead. A half-open TCP connection can otherwise stay silent for hours while the
/// server queues commands for a device it believes is gone.
/// </summary>
internal sealed class MqttKeepAlive(TimeSpan interval, TimeSpan timeout, TimeProvider time)
{
    private readonly object _gate = new();
    private TaskCompletionSource? _pong;

    /// <summary>
    /// Pings one connection until it closes (<paramref name="closed"/>); returns why it is dead, or null when it
    /// ended for another reason. A zero interval turns keep-alive off.
    /// </summary>
    public async Task<string?> RunAsync(Func<CancellationToken, ValueTask> sendPing, CancellationToken closed)
    {
        if (interval <= TimeSpan.Zero)
        {
            return null;
        }

        try
        {
            while (true)
            {
                await Task.Delay(interval, time, closed).ConfigureAwait(false);
                var pong = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                lock (_gate)
                {
                    _pong = pong;
                }

                await sendPing(closed).ConfigureAwait(false);
                try
                {
                    await pong.Task.WaitAsync(timeout, time, closed).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    return $"No PINGRESP within OperationTimeout ({timeout}): the connection is dead.";
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException or System.Net.WebSockets.WebSocketException)
        {
            // The connection ended.
            return null;
        }
    }

    /// <summary>A PINGRESP came.</summary>
    public void OnPingResponse()
    {
        lock (_gate)
        {
            _pong?.TrySetResult();
        }
    }

    /// <summary>The connection ended: nobody waits for its PINGRESP any more.</summary>
    public void Cancel()
    {
        lock (_gate)
        {
            _pong?.TrySetCanceled();
        }
    }
}
