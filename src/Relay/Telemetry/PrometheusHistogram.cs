using System.Globalization;
using System.Text;

namespace Relay.Server.Telemetry;

/// <summary>
/// The cumulative buckets, sum and count of one histogram instrument, per label set, as its measurements
/// arrive (from any thread). A record takes a short lock and, with tags, formats them: histograms are for
/// per-event figures off the hot paths, such as a rendezvous result.
/// </summary>
internal sealed class PrometheusHistogram(double[] bounds)
{
    private readonly Lock _gate = new();

    // Keyed by the rendered labels. The unlabelled series exists from the start, so a histogram without tags
    // shows zeros before its first measurement, as a counter does.
    private readonly Dictionary<string, Series> _series = new(StringComparer.Ordinal) { [string.Empty] = new Series(bounds.Length) };

    public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var labels = PrometheusFamily.Labels(tags);

        // Prometheus buckets are "less than or equal": a value on a bound counts in that bound's bucket.
        var bucket = 0;
        while (bucket < bounds.Length && value > bounds[bucket])
        {
            bucket++;
        }

        lock (_gate)
        {
            if (!_series.TryGetValue(labels, out var series))
            {
                _series[labels] = series = new Series(bounds.Length);
            }

            series.Counts[bucket]++;
            series.Sum += value;
        }
    }

    /// <summary>The <c>_bucket</c> (cumulative, <c>le</c> last), <c>_sum</c> and <c>_count</c> samples of every series.</summary>
    public void Write(StringBuilder output, string name)
    {
        lock (_gate)
        {
            foreach (var (labels, series) in _series)
            {
                if (labels.Length == 0 && series.Counts.All(static c => c == 0) && _series.Count > 1)
                {
                    // A labelled histogram: its unlabelled placeholder is not a series of its own.
                    continue;
                }

                long cumulative = 0;
                for (var i = 0; i < series.Counts.Length; i++)
                {
                    cumulative += series.Counts[i];
                    var bound = i < bounds.Length ? PrometheusFamily.Number(bounds[i]) : "+Inf";
                    output.Append(name).Append("_bucket{").Append(labels).Append(labels.Length > 0 ? "," : string.Empty)
                        .Append("le=\"").Append(bound).Append("\"} ").Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
                }

                var braces = labels.Length > 0 ? "{" + labels + "}" : string.Empty;
                output.Append(name).Append("_sum").Append(braces).Append(' ').Append(PrometheusFamily.Number(series.Sum)).Append('\n');
                output.Append(name).Append("_count").Append(braces).Append(' ').Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
            }
        }
    }

    /// <summary>Per-bucket (not cumulative) counts, the last above every bound, and the sum of the values.</summary>
    private sealed class Series(int bounds)
    {
        public long[] Counts { get; } = new long[bounds + 1];

        public double Sum { get; set; }
    }
}
