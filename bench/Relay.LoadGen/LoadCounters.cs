namespace Relay.LoadGen;

/// <summary>
/// Per-worker result counters. Each instance is written by one worker only (under its own lock, or
/// by its one thread) and summed once at the end; the per-second progress line tolerates slightly
/// stale reads.
/// </summary>
internal abstract class LoadCounters
{
    public long Sent;
    public long Ok;
    public long Lost;
    public long Stale;
    public long Invalid;
    public long Errors;
    public long Reconnects;

    public LatencyHistogram Histogram { get; } = new();
}
