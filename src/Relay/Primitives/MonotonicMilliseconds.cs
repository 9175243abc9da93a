namespace Relay.Server.Primitives;

/// <summary>
/// Milliseconds on a <see cref="TimeProvider"/>'s monotonic timestamp, for deadlines kept as one
/// <see langword="long"/> per entry (TURN lifetimes, permissions, channel bindings) and compared on hot
/// paths. Unlike <see cref="Environment.TickCount64"/> it runs on the injected clock, so a test moves it.
/// The origin is arbitrary: compare values of the same clock only.
/// </summary>
internal static class MonotonicMilliseconds
{
    /// <summary>The clock's timestamp in milliseconds.</summary>
    public static long GetMonotonicMilliseconds(this TimeProvider time)
    {
        var frequency = time.TimestampFrequency;
        var timestamp = time.GetTimestamp();

        // Integer division for the usual frequencies (10^9 on Linux, 10^7 for fake clocks), exact and overflow-free.
        return frequency % 1000 == 0 ? timestamp / (frequency / 1000) : (long)(timestamp * (1000.0 / frequency));
    }
}
