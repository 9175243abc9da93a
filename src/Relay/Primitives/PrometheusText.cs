using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Relay.Server.Primitives;

/// <summary>
/// The Prometheus text format (0.0.4) and meter observations for counters kept as fixed slot arrays, shared by
/// every *Metrics class: the hot paths increment slots, and only a scrape or an observation reads them.
/// </summary>
internal static class PrometheusText
{
    /// <summary>One sample per slot, labelled <c>tag="name"</c>.</summary>
    public static List<KeyValuePair<string, long>> Labelled(long[] slots, string[] names, string tag) =>
        names.Select((name, i) => new KeyValuePair<string, long>($"{tag}=\"{name}\"", Volatile.Read(ref slots[i]))).ToList();

    /// <summary>The slots as tagged measurements for an observable instrument.</summary>
    public static IEnumerable<Measurement<long>> Observe(long[] slots, string[] names, string tag)
    {
        for (var i = 0; i < names.Length; i++)
        {
            yield return new Measurement<long>(Volatile.Read(ref slots[i]), new KeyValuePair<string, object?>(tag, names[i]));
        }
    }

    /// <summary>A metric family: HELP and TYPE lines, then one line per sample (labels may be empty).</summary>
    public static void WriteFamily(StringBuilder output, string name, string help, string type, List<KeyValuePair<string, long>> samples)
    {
        output.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        output.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        foreach (var (labels, value) in samples)
        {
            output.Append(name);
            if (labels.Length > 0)
            {
                output.Append('{').Append(labels).Append('}');
            }

            output.Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
    }
}
