using System.Diagnostics.Metrics;

namespace Relay.Server.Primitives;

/// <summary>
/// Counters kept as fixed slot arrays, read as measurements by an observable instrument. The hot paths only
/// increment slots; a scrape or an OpenTelemetry collection reads them, and only then is anything allocated.
/// </summary>
internal static class SlotMeasurements
{
    /// <summary>One measurement per slot, tagged <c>tag=names[i]</c>.</summary>
    public static Measurement<long>[] Labelled(long[] slots, string[] names, string tag)
    {
        var measurements = new Measurement<long>[names.Length];
        for (var i = 0; i < names.Length; i++)
        {
            measurements[i] = new Measurement<long>(Volatile.Read(ref slots[i]), new KeyValuePair<string, object?>(tag, names[i]));
        }

        return measurements;
    }

    /// <summary>One measurement per (label value, count) pair, tagged <c>tag=value</c>.</summary>
    public static Measurement<long>[] Labelled(string tag, params ReadOnlySpan<(string Value, long Count)> samples)
    {
        var measurements = new Measurement<long>[samples.Length];
        for (var i = 0; i < samples.Length; i++)
        {
            measurements[i] = new Measurement<long>(samples[i].Count, new KeyValuePair<string, object?>(tag, samples[i].Value));
        }

        return measurements;
    }
}
