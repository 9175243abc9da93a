using System.Diagnostics.Metrics;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Twins;

/// <summary>Which of a device's two documents.</summary>
internal enum TwinDocument
{
    Desired,
    Reported,
}

/// <summary>Why a device's report was dropped though acknowledged (sending it again would not help).</summary>
internal enum TwinReportDrop
{
    /// <summary>Published by a client that is not the device's own session.</summary>
    NotOwner,

    /// <summary>Not a JSON object.</summary>
    Invalid,

    /// <summary>Over a <c>Relay:Twins</c> limit.</summary>
    Limit,
}

/// <summary>
/// Meter <c>Relay.Twins</c>: committed updates per document, refusals per <c>Relay:Twins</c> limit, reports
/// dropped and why, deltas sent and delta sends that could not be queued. Lock-free slots.
/// </summary>
internal sealed class TwinMetrics
{
    public const string MeterName = "Relay.Twins";

    private static readonly string[] DocumentNames = ["desired", "reported"];
    private static readonly string[] LimitNames = ["document_bytes", "depth", "keys", "pending"];
    private static readonly string[] DropNames = ["not_owner", "invalid", "limit"];

    private readonly long[] _updates = new long[DocumentNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _drops = new long[DropNames.Length];
    private long _deltasSent;
    private long _deltaRequestsDropped;

    public TwinMetrics(IMeterFactory? meterFactory = null)
    {
        if (meterFactory is null)
        {
            return;
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter(
            "relay.twin.updates", () => Labelled(_updates, DocumentNames, "document"), "{update}", "Device state updates committed, by document.");
        meter.CreateObservableCounter(
            "relay.twin.limit_hits", () => Labelled(_limits, LimitNames, "limit"), "{update}", "Updates refused by a Relay:Twins limit.");
        meter.CreateObservableCounter(
            "relay.twin.reports_dropped", () => Labelled(_drops, DropNames, "reason"), "{message}", "Device reports acknowledged but not applied, by reason.");
        meter.CreateObservableCounter("relay.twin.deltas_sent", () => Interlocked.Read(ref _deltasSent), "{message}", "Deltas handed to a device's session.");
        meter.CreateObservableCounter(
            "relay.twin.delta_requests_dropped",
            () => Interlocked.Read(ref _deltaRequestsDropped),
            "{request}",
            "Deltas due on a connect or subscribe that could not be queued; the device gets the delta on its next change or connect.");
    }

    public void CountUpdate(TwinDocument document) => Interlocked.Increment(ref _updates[(int)document]);

    public void CountLimit(TwinLimit limit) => Interlocked.Increment(ref _limits[(int)limit]);

    public void CountDrop(TwinReportDrop reason) => Interlocked.Increment(ref _drops[(int)reason]);

    public void CountDeltaSent() => Interlocked.Increment(ref _deltasSent);

    public void CountDeltaRequestDropped() => Interlocked.Increment(ref _deltaRequestsDropped);

    public long Updates(TwinDocument document) => Interlocked.Read(ref _updates[(int)document]);

    public long LimitHits(TwinLimit limit) => Interlocked.Read(ref _limits[(int)limit]);

    public long Drops(TwinReportDrop reason) => Interlocked.Read(ref _drops[(int)reason]);

    public long DeltasSent => Interlocked.Read(ref _deltasSent);
}
