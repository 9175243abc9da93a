using System.Globalization;

namespace Relay.LoadGen;

/// <summary>
/// Linux /proc readings for the TURN mode: a process's CPU time and resident memory, per-CPU busy
/// time, and the kernel's UDP error counters. Every reading returns 0 (or empty) where /proc is
/// missing, so the generator still runs elsewhere, just without these figures.
/// </summary>
internal static class ProcStats
{
    private static readonly long ClockTicks = ReadClockTicks();

    /// <summary>utime + stime of a process, in seconds (all threads).</summary>
    public static double ProcessCpuSeconds(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
            // The command name (field 2) is in parentheses and may contain spaces: split after it.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
            return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / (double)ClockTicks;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return 0;
        }
    }

    /// <summary>A field of /proc/PID/status in kB (VmRSS, VmHWM, RssAnon...); 0 when unreadable.</summary>
    public static long StatusKb(int pid, string field)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status"))
            {
                if (line.StartsWith(field, StringComparison.Ordinal) && line.Length > field.Length && line[field.Length] == ':')
                {
                    var value = line[(field.Length + 1)..].Trim();
                    var space = value.IndexOf(' ', StringComparison.Ordinal);
                    return long.Parse(space > 0 ? value[..space] : value, CultureInfo.InvariantCulture);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return 0;
        }

        return 0;
    }

    /// <summary>Number of open file descriptors of a process (what its allocations hold in sockets).</summary>
    public static int OpenFiles(int pid)
    {
        try
        {
            return Directory.GetFileSystemEntries($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/fd").Length;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>(busy, total) jiffies for "cpu", "cpu0", "cpu1", ... in /proc/stat order.</summary>
    public static Dictionary<string, (long Busy, long Total)> CpuTimes()
    {
        var result = new Dictionary<string, (long, long)>(StringComparer.Ordinal);
        try
        {
            foreach (var line in File.ReadLines("/proc/stat"))
            {
                if (!line.StartsWith("cpu", StringComparison.Ordinal))
                {
                    continue;
                }

                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                long total = 0;
                for (var i = 1; i <= 8 && i < parts.Length; i++)
                {
                    total += long.Parse(parts[i], CultureInfo.InvariantCulture);
                }

                // idle (4) and iowait (5) are not busy.
                var idle = long.Parse(parts[4], CultureInfo.InvariantCulture) + long.Parse(parts[5], CultureInfo.InvariantCulture);
                result[parts[0]] = (total - idle, total);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            result.Clear();
        }

        return result;
    }

    /// <summary>The "Udp:" counters of /proc/net/snmp (InErrors, RcvbufErrors, SndbufErrors, ...).</summary>
    public static Dictionary<string, long> UdpCounters()
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        try
        {
            var lines = File.ReadAllLines("/proc/net/snmp").Where(l => l.StartsWith("Udp:", StringComparison.Ordinal)).ToArray();
            if (lines.Length >= 2)
            {
                var names = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                var values = lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                for (var i = 1; i < names.Length && i < values.Length; i++)
                {
                    result[names[i]] = long.Parse(values[i], CultureInfo.InvariantCulture);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            result.Clear();
        }

        return result;
    }

    private static long ReadClockTicks()
    {
        try
        {
            var ticks = LinuxNative.IsSupported ? LinuxNative.SysConf(LinuxNative.ScClkTck) : 100;
            return ticks > 0 ? ticks : 100;
        }
        catch (EntryPointNotFoundException)
        {
            return 100;
        }
        catch (DllNotFoundException)
        {
            return 100;
        }
    }
}

/// <summary>CPU used by the server and by this generator, and how busy each CPU was, over one window.</summary>
internal sealed class CpuWindow
{
    private readonly int _serverPid;
    private double _serverStart;
    private double _generatorStart;
    private long _startTimestamp;
    private Dictionary<string, (long Busy, long Total)> _cpuStart = [];

    public CpuWindow(int serverPid) => _serverPid = serverPid;

    /// <summary>Server CPU in cores (CPU seconds per wall second); 0 without --server-pid.</summary>
    public double ServerCores { get; private set; }

    /// <summary>This generator's CPU in cores, all its threads.</summary>
    public double GeneratorCores { get; private set; }

    /// <summary>"all=93 cpu0=99 cpu1=88" (percent busy).</summary>
    public string Busy { get; private set; } = "";

    public void Begin()
    {
        _startTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
        _serverStart = _serverPid > 0 ? ProcStats.ProcessCpuSeconds(_serverPid) : 0;
        _generatorStart = ProcStats.ProcessCpuSeconds(Environment.ProcessId);
        _cpuStart = ProcStats.CpuTimes();
    }

    public void End()
    {
        var seconds = System.Diagnostics.Stopwatch.GetElapsedTime(_startTimestamp).TotalSeconds;
        var server = _serverPid > 0 ? ProcStats.ProcessCpuSeconds(_serverPid) : 0;
        var generator = ProcStats.ProcessCpuSeconds(Environment.ProcessId);
        var cpuEnd = ProcStats.CpuTimes();
        ServerCores = seconds > 0 ? (server - _serverStart) / seconds : 0;
        GeneratorCores = seconds > 0 ? (generator - _generatorStart) / seconds : 0;
        var parts = new List<string>();
        foreach (var (name, end) in cpuEnd)
        {
            if (_cpuStart.TryGetValue(name, out var start) && end.Total > start.Total)
            {
                var pct = 100.0 * (end.Busy - start.Busy) / (end.Total - start.Total);
                parts.Add(FormattableString.Invariant($"{(name == "cpu" ? "all" : name)}={pct:F0}"));
            }
        }

        Busy = string.Join(',', parts);
    }
}
