using System.Diagnostics.Metrics;
using System.Text;

namespace Relay.Server.Telemetry;

/// <summary>
/// <c>/metrics</c>: every instrument of the server's meters (names starting <c>Relay.</c>, made by this
/// host's <see cref="IMeterFactory"/>) in the Prometheus text exposition format 0.0.4. One
/// <see cref="MeterListener"/> is the only exporter: a scrape reads the observable instruments (the hot
/// paths keep their slot arrays, so counting stays an interlocked increment whoever listens), and
/// histograms are aggregated here as they are recorded.
/// </summary>
/// <remarks>
/// Names follow the OpenTelemetry-to-Prometheus rules without OpenTelemetry's scope labels: dots become
/// underscores, the units <c>s</c>, <c>ms</c> and <c>By</c> add <c>_seconds</c>, <c>_milliseconds</c>
/// and <c>_bytes</c> unless the name already ends so, and counters end in <c>_total</c>. Tags become
/// labels in the order measured. Push-style counters and gauges are refused when created: declare an
/// observable instrument over the feature's own counters instead, so the feature stays the one owner.
/// Another host in the same process (tests) has its own factory, and so its own families.
/// </remarks>
internal sealed class PrometheusMetricsWriter : IDisposable
{
    /// <summary>The response's content type.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Meters whose name starts so are rendered; the framework's own (Kestrel, hosting) are not.</summary>
    public const string MeterPrefix = "Relay.";

    private readonly IMeterFactory _meterFactory;
    private readonly MeterListener _listener;

    // Guards _families; a scrape also holds it, so the observed samples of two scrapes never mix.
    private readonly Lock _gate = new();
    private readonly List<PrometheusFamily> _families = [];

    // Reused by every scrape (under _gate): a scrape allocates the text it returns and one string per sample.
    private readonly StringBuilder _text = new(16 * 1024);

    public PrometheusMetricsWriter(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        _meterFactory = meterFactory;
        _listener = new MeterListener
        {
            InstrumentPublished = Publish,
            MeasurementsCompleted = Completed,
        };
        _listener.SetMeasurementEventCallback<long>(static (_, value, tags, state) => ((PrometheusFamily)state!).Add(value, tags));
        _listener.SetMeasurementEventCallback<int>(static (_, value, tags, state) => ((PrometheusFamily)state!).Add(value, tags));
        _listener.SetMeasurementEventCallback<double>(static (_, value, tags, state) => ((PrometheusFamily)state!).Add(value, tags));
        _listener.Start();
    }

    /// <summary>One scrape: every family, ordered by meter name and then by declaration.</summary>
    public string Write()
    {
        lock (_gate)
        {
            foreach (var family in _families)
            {
                family.BeginScrape();
            }

            // Runs each observable instrument's callback on this thread; their measurements land in BeginScrape's lists.
            _listener.RecordObservableInstruments();
            _text.Clear();
            foreach (var family in _families)
            {
                family.Write(_text);
            }

            return _text.ToString();
        }
    }

    public void Dispose() => _listener.Dispose();

    private void Publish(Instrument instrument, MeterListener listener)
    {
        if (!ReferenceEquals(instrument.Meter.Scope, _meterFactory) || !instrument.Meter.Name.StartsWith(MeterPrefix, StringComparison.Ordinal))
        {
            return;
        }

        var family = new PrometheusFamily(instrument);
        lock (_gate)
        {
            // Two families of one name make the whole scrape invalid (Prometheus refuses a second TYPE line).
            if (_families.Find(f => f.Name == family.Name) is { } clash)
            {
                throw new InvalidOperationException($"Instrument {instrument.Meter.Name}/{instrument.Name} would be the Prometheus family {family.Name}, which {clash.Instrument.Meter.Name}/{clash.Instrument.Name} already is");
            }

            var index = _families.FindIndex(f => string.CompareOrdinal(f.Instrument.Meter.Name, instrument.Meter.Name) > 0);
            _families.Insert(index < 0 ? _families.Count : index, family);
        }

        listener.EnableMeasurementEvents(instrument, family);
    }

    private void Completed(Instrument instrument, object? state)
    {
        lock (_gate)
        {
            _families.Remove((PrometheusFamily)state!);
        }
    }
}
