using System.Diagnostics;
using System.Globalization;

namespace Relay.LoadGen;

/// <summary>
/// The server process over time: VmRSS, open descriptors (/proc/PID/fd) and threads every interval, with
/// what the load looked like at that moment, into a CSV (written as it goes, so a run that dies still
/// leaves its figures). After the run: the table, and per series the spread of the samples after the warm-up
/// ((max - min) / min) and the drift of their window means (the same over the means of consecutive windows).
/// </summary>
/// <remarks>
/// The drift, not the spread, says whether memory grows: the garbage collector lets RSS climb by some 15% over
/// a few minutes and then gives it back (a sawtooth), so single samples differ by more than 5% on a server that
/// holds nothing more at the end than after the warm-up. A window as long as that cycle averages it out, and a
/// leak still shows as window means that climb.
/// </remarks>
internal sealed class SoakSampler(int pid, string? csvPath, Func<(int Online, long TurnLive, long Published, int Commands, long Rendezvous)> load)
{
    private const string Header = "elapsed_s,rss_kb,fds,threads,devices_online,turn_allocations,telemetry_published,commands_accepted,rendezvous_attempts";

    private readonly List<Sample> _samples = [];
    private readonly long _start = Stopwatch.GetTimestamp();

    public IReadOnlyList<Sample> Samples => _samples;

    public async Task RunAsync(TimeSpan interval, CancellationToken stop)
    {
        await using var csv = csvPath is null ? null : new StreamWriter(csvPath, append: false);
        if (csv is not null)
        {
            await csv.WriteLineAsync(Header);
        }

        using var timer = new PeriodicTimer(interval);
        do
        {
            var sample = Take();
            _samples.Add(sample);
            if (csv is not null)
            {
                await csv.WriteLineAsync(sample.ToCsv());
                await csv.FlushAsync(CancellationToken.None);
            }
        }
        while (await Next(timer, stop));
    }

    /// <summary>(min, max, drift %) of one series over the samples at or after <paramref name="warmupSeconds"/>; null when there are none.</summary>
    public (long Min, long Max, double DriftPercent)? Drift(double warmupSeconds, Func<Sample, long> series)
    {
        var after = _samples.Where(s => s.Seconds >= warmupSeconds).Select(series).ToList();
        if (after.Count == 0)
        {
            return null;
        }

        long min = after.Min(), max = after.Max();
        return (min, max, min > 0 ? 100.0 * (max - min) / min : 0);
    }

    /// <summary>
    /// (lowest, highest, drift %) of the means of consecutive <paramref name="windowSeconds"/> windows of one series
    /// after <paramref name="warmupSeconds"/> (a last window shorter than half a window joins the one before);
    /// null when there are none.
    /// </summary>
    public (long Min, long Max, double DriftPercent)? WindowDrift(double warmupSeconds, double windowSeconds, Func<Sample, long> series) =>
        WindowDrift(_samples, warmupSeconds, windowSeconds, series);

    internal static (long Min, long Max, double DriftPercent)? WindowDrift(IEnumerable<Sample> samples, double warmupSeconds, double windowSeconds, Func<Sample, long> series)
    {
        var after = samples.Where(s => s.Seconds >= warmupSeconds).ToList();
        if (after.Count == 0 || windowSeconds <= 0)
        {
            return null;
        }

        var span = after[^1].Seconds - after[0].Seconds;
        var windows = Math.Max(1, (int)Math.Round(span / windowSeconds));
        var means = after
            .GroupBy(s => Math.Min(windows - 1, (int)((s.Seconds - after[0].Seconds) / windowSeconds)))
            .Select(g => g.Average(series))
            .ToList();
        double min = means.Min(), max = means.Max();
        return ((long)min, (long)max, min > 0 ? 100.0 * (max - min) / min : 0);
    }

    /// <summary>The samples of a CSV this sampler wrote (to judge a kept run again).</summary>
    internal static List<Sample> ReadCsv(string path) =>
        [.. File.ReadLines(path).Skip(1).Where(static l => l.Length > 0).Select(static l =>
        {
            var f = l.Split(',');
            long L(int i) => long.Parse(f[i], CultureInfo.InvariantCulture);
            return new Sample(double.Parse(f[0], CultureInfo.InvariantCulture), L(1), L(2), L(3), (int)L(4), L(5), L(6), (int)L(7), L(8));
        })];

    public static string TableHeader => Header.Replace(',', '\t');

    private static async Task<bool> Next(PeriodicTimer timer, CancellationToken stop)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stop);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private Sample Take()
    {
        var (online, turn, published, commands, rendezvous) = load();
        return new Sample(
            Stopwatch.GetElapsedTime(_start).TotalSeconds,
            pid > 0 ? ProcStats.StatusKb(pid, "VmRSS") : 0,
            pid > 0 ? ProcStats.OpenFiles(pid) : 0,
            pid > 0 ? ProcStats.StatusKb(pid, "Threads") : 0,
            online,
            turn,
            published,
            commands,
            rendezvous);
    }

    internal sealed record Sample(double Seconds, long RssKb, long Fds, long Threads, int Online, long TurnLive, long Published, int Commands, long Rendezvous)
    {
        public string ToCsv() => string.Join(',', Fields());

        public string ToRow() => string.Join('\t', Fields());

        private IEnumerable<string> Fields() =>
        [
            Seconds.ToString("F0", CultureInfo.InvariantCulture),
            RssKb.ToString(CultureInfo.InvariantCulture),
            Fds.ToString(CultureInfo.InvariantCulture),
            Threads.ToString(CultureInfo.InvariantCulture),
            Online.ToString(CultureInfo.InvariantCulture),
            TurnLive.ToString(CultureInfo.InvariantCulture),
            Published.ToString(CultureInfo.InvariantCulture),
            Commands.ToString(CultureInfo.InvariantCulture),
            Rendezvous.ToString(CultureInfo.InvariantCulture),
        ];
    }
}
