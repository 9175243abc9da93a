using System.Diagnostics.Metrics;

namespace Relay.Server.Connectors;

/// <summary>Why a connector gave a message up. Each is counted in <c>relay_connectors_dropped_total{reason}</c>.</summary>
internal enum ConnectorDropReason
{
    /// <summary>The memory buffer was full and spilling is off (<c>SpillMaxBytes=0</c>) or could not keep up.</summary>
    BufferFull,

    /// <summary>The spill files reached <c>SpillMaxBytes</c>.</summary>
    SpillFull,

    /// <summary>The disk refused a spill write (full, read-only, I/O error).</summary>
    SpillError,

    /// <summary>A spilled record was found damaged (a write torn by a crash) and skipped.</summary>
    SpillDamaged,

    /// <summary>The target refused the batch for good (HTTP 4xx other than 408/429).</summary>
    Rejected,

    /// <summary>The server stopped with messages in memory and spilling off (or failing), or a message came after the connector stopped.</summary>
    Shutdown,
}

/// <summary>
/// Meter <c>Relay.Connectors</c>: per connector (label <c>connector</c> = its name), what was delivered,
/// buffered, spilled, retried and dropped (by reason), and whether the target is up.
/// </summary>
internal sealed class ConnectorMetrics
{
    public const string MeterName = "Relay.Connectors";

    private static readonly string[] ReasonNames = ["buffer_full", "spill_full", "spill_error", "spill_damaged", "rejected", "shutdown"];

    private readonly string[] _names;
    private readonly long[] _delivered;
    private readonly long[] _retries;
    private readonly long[] _spilled;
    private readonly long[] _buffered;
    private readonly long[] _spillBytes;
    private readonly long[] _spillMessages;
    private readonly long[] _up;
    private readonly long[,] _dropped;

    public ConnectorMetrics(IReadOnlyList<string> connectorNames, IMeterFactory? meterFactory = null)
    {
        ArgumentNullException.ThrowIfNull(connectorNames);
        _names = [.. connectorNames];
        var n = _names.Length;
        _delivered = new long[n];
        _retries = new long[n];
        _spilled = new long[n];
        _buffered = new long[n];
        _spillBytes = new long[n];
        _spillMessages = new long[n];
        _up = new long[n];
        _dropped = new long[n, ReasonNames.Length];
        Array.Fill(_up, 1);
        if (meterFactory is null)
        {
            return;
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.connectors.delivered", () => PerConnector(_delivered), "{message}", "Messages a connector's target accepted.");
        meter.CreateObservableCounter("relay.connectors.retries", () => PerConnector(_retries), "{attempt}",
            "Failed writes to a target that were tried again (quick retries and probes of a down target).");
        meter.CreateObservableCounter("relay.connectors.spilled", () => PerConnector(_spilled), "{message}",
            "Messages written to a connector's spill files while its target was down or behind.");
        meter.CreateObservableCounter("relay.connectors.dropped", Dropped, "{message}", "Messages a connector gave up, by reason; nothing else is lost.");
        meter.CreateObservableGauge("relay.connectors.buffered", () => PerConnector(_buffered), "{message}", "Messages in a connector's memory buffer now.");
        meter.CreateObservableGauge("relay.connectors.spill.messages", () => PerConnector(_spillMessages), "{message}",
            "Messages in a connector's spill files now.");
        meter.CreateObservableGauge("relay.connectors.spill.bytes", () => PerConnector(_spillBytes), "By",
            "Bytes of unread messages in a connector's spill files now.");
        meter.CreateObservableGauge("relay.connectors.up", () => PerConnector(_up), "{connector}",
            "1 while a connector's last write succeeded, 0 while its target is down.");
    }

    public long Delivered(int connector) => Interlocked.Read(ref _delivered[connector]);

    public long Retries(int connector) => Interlocked.Read(ref _retries[connector]);

    public long Spilled(int connector) => Interlocked.Read(ref _spilled[connector]);

    public long Buffered(int connector) => Interlocked.Read(ref _buffered[connector]);

    public long SpillMessages(int connector) => Interlocked.Read(ref _spillMessages[connector]);

    public bool Up(int connector) => Interlocked.Read(ref _up[connector]) == 1;

    public long Dropped(int connector, ConnectorDropReason reason) => Interlocked.Read(ref _dropped[connector, (int)reason]);

    public long DroppedTotal(int connector)
    {
        long total = 0;
        for (var r = 0; r < ReasonNames.Length; r++)
        {
            total += Interlocked.Read(ref _dropped[connector, r]);
        }

        return total;
    }

    public void CountDelivered(int connector, int messages) => Interlocked.Add(ref _delivered[connector], messages);

    public void CountRetry(int connector) => Interlocked.Increment(ref _retries[connector]);

    public void CountSpilled(int connector, int messages) => Interlocked.Add(ref _spilled[connector], messages);

    public void CountDropped(int connector, ConnectorDropReason reason, long messages) => Interlocked.Add(ref _dropped[connector, (int)reason], messages);

    public void AddBuffered(int connector, int delta) => Interlocked.Add(ref _buffered[connector], delta);

    public void SetSpill(int connector, long messages, long bytes)
    {
        Interlocked.Exchange(ref _spillMessages[connector], messages);
        Interlocked.Exchange(ref _spillBytes[connector], bytes);
    }

    public void SetUp(int connector, bool up) => Interlocked.Exchange(ref _up[connector], up ? 1 : 0);

    internal static string ReasonName(ConnectorDropReason reason) => ReasonNames[(int)reason];

    private Measurement<long>[] PerConnector(long[] slots)
    {
        var measurements = new Measurement<long>[_names.Length];
        for (var i = 0; i < _names.Length; i++)
        {
            measurements[i] = new Measurement<long>(Interlocked.Read(ref slots[i]), new KeyValuePair<string, object?>("connector", _names[i]));
        }

        return measurements;
    }

    private Measurement<long>[] Dropped()
    {
        var measurements = new Measurement<long>[_names.Length * ReasonNames.Length];
        for (var i = 0; i < _names.Length; i++)
        {
            for (var r = 0; r < ReasonNames.Length; r++)
            {
                measurements[(i * ReasonNames.Length) + r] = new Measurement<long>(
                    Interlocked.Read(ref _dropped[i, r]),
                    new KeyValuePair<string, object?>("connector", _names[i]),
                    new KeyValuePair<string, object?>("reason", ReasonNames[r]));
            }
        }

        return measurements;
    }
}
