using System.Diagnostics;
using System.Globalization;

namespace Relay.LoadGen;

/// <summary>
/// The server process over time: VmRSS, open descriptors (/proc/PID/fd) and threads every interval, with
/// what the load looked like at that moment, into a CSV (written as it goes, so a run that dies still
/// leaves its figures). After the run: the table, and per series the minimum, maximum and drift
/// ((max - min) / min) of the samples after the warm-up.
/// </summary>
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
