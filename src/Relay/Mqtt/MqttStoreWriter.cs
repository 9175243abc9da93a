using System.Threading.Channels;

namespace Relay.Server.Mqtt;

/// <summary>
/// Session-store writes that a session makes while it holds its lock and so cannot await: "went out with
/// packet id N", "PUBREC came back" and "gone". One reader writes them in order. Bounded: when the store is
/// too far behind, a write is lost and counted (the message is then resent without DUP, or once more, after
/// a crash: QoS 1 semantics, never loss).
/// </summary>
internal sealed partial class MqttStoreWriter
{
    private const int Capacity = 65536;

    private readonly IMqttSessionStore _store;
    private readonly ILogger _logger;

    // Wait mode only so that TryWrite reports a full channel (it never waits): the drop modes accept and
    // discard silently, and a lost write must be counted.
    private readonly Channel<StoreOp> _ops = Channel.CreateBounded<StoreOp>(new BoundedChannelOptions(Capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private long _lost;

    public MqttStoreWriter(IMqttSessionStore store, ILogger<MqttStoreWriter> logger)
    {
        _store = store;
        _logger = logger;
    }

    /// <summary>Writes lost because the store was too far behind.</summary>
    public long Lost => Volatile.Read(ref _lost);

    /// <summary>Queues a write; never blocks.</summary>
    public void Enqueue(in StoreOp op)
    {
        if (!_ops.Writer.TryWrite(op))
        {
            Interlocked.Increment(ref _lost);
            LogStoreOpLost(op.ClientId, op.Sequence);
        }
    }

    /// <summary>
    /// Writes until <see cref="Complete"/>, then drains what is left: these writes are what keeps a restart
    /// from resending acknowledged messages, so shutdown does not cancel them.
    /// </summary>
    public async Task RunAsync()
    {
        await foreach (var op in _ops.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
        {
            try
            {
                if (op.Remove)
                {
                    await _store.RemoveMessageAsync(op.ClientId, op.Sequence, CancellationToken.None).ConfigureAwait(false);
                }
                else
                {
                    await _store.MarkSentAsync(op.ClientId, op.Sequence, op.PacketId, op.Released, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                LogStoreFailed(e, op.ClientId);
            }
        }
    }

    /// <summary>No more writes will come; <see cref="RunAsync"/> ends once it has written those queued.</summary>
    public void Complete() => _ops.Writer.TryComplete();

    [LoggerMessage(EventId = 5002, Level = LogLevel.Warning, Message = "MQTT: store write for {ClientId} (sequence {Sequence}) dropped: the store is too far behind")]
    private partial void LogStoreOpLost(string clientId, long sequence);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Error, Message = "MQTT: session store write for {ClientId} failed")]
    private partial void LogStoreFailed(Exception exception, string clientId);
}

/// <summary>A deferred session-store write: mark sent (packet id, released) or remove.</summary>
internal readonly record struct StoreOp(string ClientId, long Sequence, ushort PacketId, bool Released, bool Remove);
