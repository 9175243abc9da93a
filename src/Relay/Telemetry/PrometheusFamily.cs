using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Relay.Server.Telemetry;

/// <summary>
/// One instrument as a Prometheus metric family: its name, type and HELP, the samples its callback gave in
/// the current scrape (observable instruments), or its buckets (histograms).
/// </summary>
internal sealed class PrometheusFamily
{
    // The OpenTelemetry SDK's default explicit bounds, for a histogram declared without advice.
    private static readonly double[] DefaultBounds = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];

    // Observable instruments only: filled by one scrape's RecordObservableInstruments, under the writer's lock.
    private readonly List<(string Labels, string Value)> _observed = [];
    private readonly PrometheusHistogram? _histogram;

    public PrometheusFamily(Instrument instrument)
    {
        Instrument = instrument;
        var kind = instrument.GetType().IsGenericType ? instrument.GetType().GetGenericTypeDefinition() : instrument.GetType();
        Type = kind == typeof(ObservableCounter<>) ? "counter"
            : kind == typeof(ObservableUpDownCounter<>) || kind == typeof(ObservableGauge<>) ? "gauge"
            : kind == typeof(Histogram<>) ? "histogram"
            : throw new NotSupportedException($"Instrument {instrument.Meter.Name}/{instrument.Name} is a {kind.Name}: /metrics renders observable instruments (over the feature's own counters) and histograms");
        Name = PrometheusName(instrument.Name, instrument.Unit, Type);
        if (Type == "histogram")
        {
            _histogram = new PrometheusHistogram(Bounds(instrument) ?? DefaultBounds);
        }
    }

    public Instrument Instrument { get; }

    public string Name { get; }

    /// <summary><c>counter</c>, <c>gauge</c> or <c>histogram</c>.</summary>
    public string Type { get; }

    public void BeginScrape() => _observed.Clear();

    public void Add(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (_histogram is { } histogram)
        {
            histogram.Record(value, tags);
            return;
        }

        _observed.Add((Labels(tags), value.ToString(CultureInfo.InvariantCulture)));
    }

    public void Add(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (_histogram is { } histogram)
        {
            histogram.Record(value, tags);
            return;
        }

        _observed.Add((Labels(tags), Number(value)));
    }

    /// <summary>HELP, TYPE, then the samples.</summary>
    public void Write(StringBuilder output)
    {
        output.Append("# HELP ").Append(Name).Append(' ');
        foreach (var c in Instrument.Description ?? Instrument.Name)
        {
            // The format's HELP escapes: backslash and line feed.
            _ = c switch { '\\' => output.Append(@"\\"), '\n' => output.Append(@"\n"), _ => output.Append(c) };
        }

        output.Append("\n# TYPE ").Append(Name).Append(' ').Append(Type).Append('\n');
        if (_histogram is { } histogram)
        {
            histogram.Write(output, Name);
            return;
        }

        foreach (var (labels, value) in _observed)
        {
            output.Append(Name);
            if (labels.Length > 0)
            {
                output.Append('{').Append(labels).Append('}');
            }

            output.Append(' ').Append(value).Append('\n');
        }
    }

    /// <summary><c>relay.stun.requests</c> ({request}, counter) is <c>relay_stun_requests_total</c>; <c>relay.x.delay</c> (s) is <c>relay_x_delay_seconds</c>.</summary>
    public static string PrometheusName(string instrumentName, string? unit, string type)
    {
        var name = new StringBuilder(instrumentName.Length + 16);
        foreach (var c in instrumentName)
        {
            name.Append(char.IsAsciiLetterOrDigit(c) || c is '_' or ':' ? c : '_');
        }

        var suffix = unit switch { "s" => "_seconds", "ms" => "_milliseconds", "By" => "_bytes", _ => null };
        if (suffix is not null && !EndsWith(name, suffix))
        {
            name.Append(suffix);
        }

        if (type == "counter" && !EndsWith(name, "_total"))
        {
            name.Append("_total");
        }

        return name.ToString();

        static bool EndsWith(StringBuilder name, string suffix) => name.Length >= suffix.Length && name.ToString(name.Length - suffix.Length, suffix.Length) == suffix;
    }

    /// <summary>Tags as <c>key="value",...</c> in the order given, values escaped as the format requires.</summary>
    public static string Labels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.IsEmpty)
        {
            return string.Empty;
        }

        var labels = new StringBuilder();
        foreach (var (key, value) in tags)
        {
            if (labels.Length > 0)
            {
                labels.Append(',');
            }

            foreach (var c in key)
            {
                labels.Append(char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_');
            }

            labels.Append("=\"");
            foreach (var c in Convert.ToString(value, CultureInfo.InvariantCulture) ?? string.Empty)
            {
                _ = c switch { '\\' => labels.Append(@"\\"), '"' => labels.Append("\\\""), '\n' => labels.Append(@"\n"), _ => labels.Append(c) };
            }

            labels.Append('"');
        }

        return labels.ToString();
    }

    /// <summary>A float as the format writes it: shortest round-trip digits, <c>+Inf</c>, <c>-Inf</c>, <c>NaN</c>.</summary>
    public static string Number(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : double.IsNaN(value) ? "NaN"
        : value.ToString(CultureInfo.InvariantCulture);

    private static double[]? Bounds(Instrument instrument) => instrument switch
    {
        Histogram<double> { Advice.HistogramBucketBoundaries: { } bounds } => [.. bounds],
        Histogram<long> { Advice.HistogramBucketBoundaries: { } bounds } => [.. bounds.Select(static b => (double)b)],
        Histogram<int> { Advice.HistogramBucketBoundaries: { } bounds } => [.. bounds.Select(static b => (double)b)],
        _ => null,
    };
}
