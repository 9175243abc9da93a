using System.Globalization;
using System.Text;

namespace Relay.Server.Tests.Metrics;

/// <summary>One sample line: its name (a histogram's carries _bucket, _sum or _count), labels in order, value.</summary>
internal sealed record ScrapedSample(string Name, IReadOnlyList<KeyValuePair<string, string>> Labels, double Value)
{
    public string? Label(string key) => Labels.FirstOrDefault(l => l.Key == key).Value;
}

/// <summary>One metric family: HELP and TYPE, then its samples.</summary>
internal sealed record ScrapedFamily(string Name, string Type, string Help, IReadOnlyList<ScrapedSample> Samples)
{
    /// <summary>The label keys the samples carry, sorted (a histogram's <c>le</c> left out); every sample must carry the same.</summary>
    public string LabelKeys => string.Join(',', Samples.Select(s => s.Labels.Select(l => l.Key).Where(k => Type != "histogram" || k != "le").Order(StringComparer.Ordinal)).Select(k => string.Join(',', k)).Distinct().DefaultIfEmpty(string.Empty).Single());
}

/// <summary>
/// A strict reader of the Prometheus text exposition format 0.0.4: every family has one HELP and one TYPE
/// line before its samples, a family appears once, its samples are contiguous, names and label names match
/// the format's grammar, label values are properly escaped, values are floats, no sample repeats, and a
/// histogram's buckets are cumulative, end at <c>+Inf</c> and agree with <c>_count</c>.
/// Violations throw <see cref="FormatException"/> naming the line.
/// </summary>
internal static class PrometheusExposition
{
    private static readonly string[] Types = ["counter", "gauge", "histogram", "summary", "untyped"];

    public static IReadOnlyList<ScrapedFamily> Parse(string text)
    {
        if (text.Length > 0 && !text.EndsWith('\n'))
        {
            throw new FormatException("the exposition must end with a line feed");
        }

        var families = new List<ScrapedFamily>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        string? name = null, type = null, help = null;
        var samples = new List<ScrapedSample>();
        var keys = new HashSet<string>(StringComparer.Ordinal);
        var lines = text.Split('\n');
        for (var n = 0; n < lines.Length - 1; n++)
        {
            var line = lines[n];
            var where = $"line {n + 1}: \"{line}\"";
            if (line.Length == 0)
            {
                continue;
            }

            if (line.StartsWith("# HELP ", StringComparison.Ordinal))
            {
                Close();
                var (helpName, helpText) = Split(line["# HELP ".Length..], where);
                if (!seen.Add(helpName))
                {
                    throw new FormatException($"{where}: a second HELP/TYPE for {helpName}");
                }

                name = helpName;
                help = helpText;
                continue;
            }

            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var (typeName, typeText) = Split(line["# TYPE ".Length..], where);
                if (typeName != name || type is not null || !Types.Contains(typeText))
                {
                    throw new FormatException($"{where}: TYPE must follow the family's HELP once, with a known type");
                }

                type = typeText;
                continue;
            }

            if (line.StartsWith('#'))
            {
                continue;
            }

            if (name is null || type is null)
            {
                throw new FormatException($"{where}: a sample before its family's HELP and TYPE");
            }

            var sample = ParseSample(line, where);
            var suffixes = type is "histogram" ? new[] { "_bucket", "_sum", "_count" } : type is "summary" ? ["", "_sum", "_count"] : [""];
            if (!suffixes.Any(s => sample.Name == name + s))
            {
                throw new FormatException($"{where}: sample {sample.Name} is not of family {name} ({type})");
            }

            var key = sample.Name + "{" + string.Join(',', sample.Labels.Select(l => l.Key + "=" + l.Value)) + "}";
            if (!keys.Add(key))
            {
                throw new FormatException($"{where}: a repeated sample");
            }

            samples.Add(sample);
        }

        Close();
        return families;

        void Close()
        {
            if (name is null)
            {
                return;
            }

            if (type is null)
            {
                throw new FormatException($"family {name} has HELP but no TYPE");
            }

            if (type == "histogram")
            {
                CheckHistogram(name, samples);
            }

            families.Add(new ScrapedFamily(name, type, help ?? string.Empty, samples));
            name = null;
            type = null;
            help = null;
            samples = [];
        }
    }

    private static (string Name, string Text) Split(string text, string where)
    {
        var space = text.IndexOf(' ', StringComparison.Ordinal);
        var name = space < 0 ? text : text[..space];
        if (!IsMetricName(name))
        {
            throw new FormatException($"{where}: bad metric name");
        }

        return (name, space < 0 ? string.Empty : text[(space + 1)..]);
    }

    private static ScrapedSample ParseSample(string line, string where)
    {
        var i = 0;
        while (i < line.Length && line[i] is not ('{' or ' '))
        {
            i++;
        }

        var name = line[..i];
        if (!IsMetricName(name))
        {
            throw new FormatException($"{where}: bad metric name");
        }

        var labels = new List<KeyValuePair<string, string>>();
        if (i < line.Length && line[i] == '{')
        {
            i++;
            while (line[i] != '}')
            {
                var eq = line.IndexOf('=', i);
                var labelName = eq < 0 ? string.Empty : line[i..eq];
                if (!IsLabelName(labelName) || labels.Any(l => l.Key == labelName) || eq + 1 >= line.Length || line[eq + 1] != '"')
                {
                    throw new FormatException($"{where}: bad or repeated label name");
                }

                var value = new StringBuilder();
                i = eq + 2;
                while (true)
                {
                    if (i >= line.Length)
                    {
                        throw new FormatException($"{where}: unterminated label value");
                    }

                    var c = line[i++];
                    if (c == '"')
                    {
                        break;
                    }

                    if (c == '\\')
                    {
                        value.Append(i < line.Length ? line[i++] switch { '\\' => '\\', '"' => '"', 'n' => '\n', _ => throw new FormatException($"{where}: bad escape") } : throw new FormatException($"{where}: bad escape"));
                        continue;
                    }

                    value.Append(c);
                }

                labels.Add(new(labelName, value.ToString()));
                if (i < line.Length && line[i] == ',')
                {
                    i++;
                }
                else if (i >= line.Length || line[i] != '}')
                {
                    throw new FormatException($"{where}: expected , or }} after a label");
                }
            }

            i++;
        }

        if (i >= line.Length || line[i] != ' ')
        {
            throw new FormatException($"{where}: expected a space before the value");
        }

        var fields = line[(i + 1)..].Split(' ');
        if (fields.Length > 2 || !TryParseValue(fields[0], out var number) || (fields.Length == 2 && !long.TryParse(fields[1], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _)))
        {
            throw new FormatException($"{where}: bad value or timestamp");
        }

        return new ScrapedSample(name, labels, number);
    }

    private static void CheckHistogram(string name, List<ScrapedSample> samples)
    {
        foreach (var series in samples.GroupBy(s => string.Join(',', s.Labels.Where(l => l.Key != "le").Select(l => l.Key + "=" + l.Value))))
        {
            var buckets = series.Where(s => s.Name == name + "_bucket").ToList();
            if (buckets.Count == 0 || buckets.Any(b => b.Label("le") is null) || buckets[^1].Label("le") != "+Inf")
            {
                throw new FormatException($"histogram {name}: buckets need le and must end at +Inf");
            }

            for (var i = 1; i < buckets.Count; i++)
            {
                if (buckets[i].Value < buckets[i - 1].Value || ParseBound(buckets[i].Label("le")!) <= ParseBound(buckets[i - 1].Label("le")!))
                {
                    throw new FormatException($"histogram {name}: buckets must be cumulative with increasing bounds");
                }
            }

            var count = series.SingleOrDefault(s => s.Name == name + "_count") ?? throw new FormatException($"histogram {name}: no _count");
            _ = series.SingleOrDefault(s => s.Name == name + "_sum") ?? throw new FormatException($"histogram {name}: no _sum");
            if (count.Value != buckets[^1].Value)
            {
                throw new FormatException($"histogram {name}: _count differs from the +Inf bucket");
            }
        }
    }

    private static double ParseBound(string le) => TryParseValue(le, out var bound) ? bound : throw new FormatException($"bad le \"{le}\"");

    private static bool TryParseValue(string text, out double value)
    {
        switch (text)
        {
            case "+Inf":
                value = double.PositiveInfinity;
                return true;
            case "-Inf":
                value = double.NegativeInfinity;
                return true;
            case "NaN":
                value = double.NaN;
                return true;
            default:
                return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && !text.Contains("Infinity", StringComparison.OrdinalIgnoreCase);
        }
    }

    private static bool IsMetricName(string name) =>
        name.Length > 0 && (char.IsAsciiLetter(name[0]) || name[0] is '_' or ':') && name.All(static c => char.IsAsciiLetterOrDigit(c) || c is '_' or ':');

    private static bool IsLabelName(string name) =>
        name.Length > 0 && (char.IsAsciiLetter(name[0]) || name[0] == '_') && name.All(static c => char.IsAsciiLetterOrDigit(c) || c == '_');
}
