namespace Relay.Server.Primitives;

/// <summary>
/// At most one log line per slot per interval, for events a client can cause at will (a limit hit, a refusal,
/// a malformed packet): the count goes to a metric every time, the log gets a sample. Lock-free; the
/// lines suppressed since the last one are handed to the one that goes out, so nothing is hidden.
/// </summary>
internal sealed class LogThrottle
{
    private readonly long[] _lastLogged;
    private readonly long[] _suppressed;
    private readonly long _intervalTicks;
    private readonly TimeProvider _time;

    public LogThrottle(int slots, TimeSpan interval, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slots);
        ArgumentNullException.ThrowIfNull(time);
        _lastLogged = new long[slots];
        _suppressed = new long[slots];
        Array.Fill(_lastLogged, long.MinValue);
        _time = time;
        _intervalTicks = (long)(interval.TotalSeconds * time.TimestampFrequency);
    }

    /// <summary>Ten seconds per slot on the system clock: the server's default.</summary>
    public LogThrottle(int slots)
        : this(slots, TimeSpan.FromSeconds(10), TimeProvider.System)
    {
    }

    /// <summary>
    /// True when a line for <paramref name="slot"/> may be written now; <paramref name="suppressed"/> is how
    /// many were held back since the previous one.
    /// </summary>
    public bool TryEnter(int slot, out long suppressed)
    {
        var now = _time.GetTimestamp();
        var last = Volatile.Read(ref _lastLogged[slot]);
        if ((last == long.MinValue || now - last >= _intervalTicks) && Interlocked.CompareExchange(ref _lastLogged[slot], now, last) == last)
        {
            suppressed = Interlocked.Exchange(ref _suppressed[slot], 0);
            return true;
        }

        Interlocked.Increment(ref _suppressed[slot]);
        suppressed = 0;
        return false;
    }
}
