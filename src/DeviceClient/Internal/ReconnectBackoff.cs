namespace Relay.DeviceClient.Internal;

/// <summary>
/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the
/// delay before attempt n is uniformly random in [0, min(MaxDelay, BaseDelay * 2^n)]. Full jitter spreads a
/// fleet that lost the server at the same moment over the whole window, which decorrelated jitter does
/// not do better for our case and is harder to test exactly. The attempt counter goes back to 0 once a
/// connection has stayed up <see cref="ReconnectOptions.StableConnectionTime"/>, measured on the TimeProvider.
/// </summary>
internal sealed class ReconnectBackoff(ReconnectOptions options, TimeProvider time, Func<double> random)
{
    private int _attempt;
    private long _connectedAt = -1;

    public int Attempt => _attempt;

    /// <summary>The delay before the next attempt; advances the attempt counter.</summary>
    public TimeSpan NextDelay()
    {
        var cap = Cap(_attempt);
        if (_attempt < 62)
        {
            _attempt++;
        }

        var r = Math.Clamp(random(), 0, 1);
        return TimeSpan.FromTicks((long)(cap.Ticks * r));
    }

    /// <summary>The upper bound of the delay before attempt <paramref name="attempt"/>.</summary>
    public TimeSpan Cap(int attempt)
    {
        var max = options.MaxDelay.Ticks;
        var ticks = options.BaseDelay.Ticks;
        for (var i = 0; i < attempt && ticks < max; i++)
        {
            ticks *= 2;
        }

        return TimeSpan.FromTicks(Math.Min(ticks, max));
    }

    public void OnConnected() => _connectedAt = time.GetTimestamp();

    public void OnDisconnected()
    {
        if (_connectedAt >= 0 && time.GetElapsedTime(_connectedAt) >= options.StableConnectionTime)
        {
            _attempt = 0;
        }

        _connectedAt = -1;
    }
}
