namespace Relay.Server.Turn;

/// <summary>
/// The relay's epoll loops, one per CPU, started with the host; new UDP allocations are spread over
/// them in turn.
/// </summary>
internal sealed class RelayIoLoopGroup : IDisposable
{
    private const int BatchSize = 16;

    // The largest UDP payload: 65,535 less the UDP and IPv4 headers.
    private const int MaxDatagram = 65535 - 8 - 20;

    private RelayIoLoop[] _loops = [];
    private int _next;

    /// <summary>Starts one loop per CPU; allocations are added only after this.</summary>
    public void Start(TurnDataPath dataPath, TimeProvider time, ILogger logger)
    {
        _loops = Enumerable.Range(0, Math.Max(1, Environment.ProcessorCount))
            .Select(i => new RelayIoLoop(dataPath, time, logger, i, BatchSize, MaxDatagram))
            .ToArray();
    }

    /// <summary>Watches a new allocation's relay socket(s) on the next loop.</summary>
    /// <exception cref="IOException">epoll refused the descriptor.</exception>
    public void Add(TurnAllocation allocation) =>
        _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)].Add(allocation);

    public void Dispose()
    {
        foreach (var loop in _loops)
        {
            loop.Dispose();
        }

        _loops = [];
    }
}
