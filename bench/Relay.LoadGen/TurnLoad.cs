using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// The <c>turn</c> command: drives any RFC 8656 server over UDP and reports allocation rate, memory
/// per allocation, relayed round trips per second and the latency the relay adds. One thread does
/// all the client I/O (<see cref="TurnClients"/>), one more echoes at the peers (<see cref="EchoPeers"/>).
/// </summary>
internal static class TurnLoad
{
    public static int Run(TurnLoadOptions o)
    {
        var total = o.Active + o.Allocations;
        Console.WriteLine(FormattableString.Invariant(
            $"turn load: target={o.TargetText} user={o.User} active={o.Active} window={o.Window} allocations={o.Allocations} inflight={o.InFlight} peers={o.Peers} payload={o.Payload}B duration={o.DurationSeconds}s rate={o.Rate}/s gso={o.Gso} server_pid={o.ServerPid}"));

        EchoPeers peers;
        TurnClients clients;
        try
        {
            peers = new EchoPeers(o.PeerAddress, o.Peers);
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"error: cannot open echo peers: {e.Message}");
            return 1;
        }

        try
        {
            clients = new TurnClients(o.Target, peers.Endpoints, total, o.ClientPortBase, new TurnCredentials(o.User, o.Password));
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"error: cannot open {total} client sockets ({e.Message}); check ulimit -n");
            peers.Dispose();
            return 1;
        }

        using var peersScope = peers;
        using var clientsScope = clients;
        peers.Start();
        var result = new StringBuilder();
        void Add(string key, FormattableString value) => result.Append(' ').Append(key).Append('=').Append(value.ToString(CultureInfo.InvariantCulture));

        // 1. Warm set: the allocations that carry traffic.
        var warmAlloc = clients.RunSetup(SetupKind.Allocate, 0, o.Active, o.InFlight, o.SetupTimeoutMs, o.Retries);
        var warmBind = clients.RunSetup(SetupKind.Bind, 0, o.Active, o.InFlight, o.SetupTimeoutMs, o.Retries);
        Report("warm set allocate", warmAlloc);
        Report("warm set permission+channel", warmBind);
        if (warmAlloc.Failed > 0 || warmBind.Failed > 0)
        {
            Console.Error.WriteLine("error: the warm set could not be set up; no traffic can be measured");
            if (o.Release)
            {
                clients.RunSetup(SetupKind.Release, 0, total, o.InFlight, o.SetupTimeoutMs, 1);
            }

            return 1;
        }

        // 2. Warm-up round trips (JIT, caches on both sides), not counted.
        var warm = clients.RunClosedLoop(o.Active, o.Window, o.Payload, direct: false, o.Gso, 0, o.WarmupSeconds, o.TimeoutMs, null);
        Console.WriteLine(FormattableString.Invariant($"warm-up: {warm.PerSecond:F0} round trips/s over {warm.Seconds:F1}s, lost {warm.Lost}"));

        // 3. Memory baseline, then the timed allocations, then memory again.
        Thread.Sleep(TimeSpan.FromSeconds(o.SettleSeconds));
        var rssBefore = o.ServerPid > 0 ? ProcStats.StatusKb(o.ServerPid, "VmRSS") : 0;
        var fdsBefore = o.ServerPid > 0 ? ProcStats.OpenFiles(o.ServerPid) : 0;
        var allocCpu = new CpuWindow(o.ServerPid);
        allocCpu.Begin();
        var alloc = clients.RunSetup(SetupKind.Allocate, o.Active, o.Allocations, o.InFlight, o.SetupTimeoutMs, o.Retries);
        allocCpu.End();
        var bindCpu = new CpuWindow(o.ServerPid);
        bindCpu.Begin();
        var bind = clients.RunSetup(SetupKind.Bind, o.Active, o.Allocations, o.InFlight, o.SetupTimeoutMs, o.Retries);
        bindCpu.End();
        Report("allocate", alloc, allocCpu);
        Report("permission+channel", bind, bindCpu);
        Thread.Sleep(TimeSpan.FromSeconds(o.SettleSeconds));
        var rssAfter = o.ServerPid > 0 ? ProcStats.StatusKb(o.ServerPid, "VmRSS") : 0;
        var fdsAfter = o.ServerPid > 0 ? ProcStats.OpenFiles(o.ServerPid) : 0;
        var established = Math.Max(1, alloc.Done);
        var bytesPerAlloc = o.ServerPid > 0 ? (rssAfter - rssBefore) * 1024.0 / established : 0;
        if (o.ServerPid > 0)
        {
            Console.WriteLine(FormattableString.Invariant(
                $"memory: VmRSS {rssBefore} kB -> {rssAfter} kB with {alloc.Done} more allocations: {bytesPerAlloc:F0} bytes per allocation; open files {fdsBefore} -> {fdsAfter} ({(fdsAfter - fdsBefore) / (double)established:F2} per allocation)"));
        }

        // 3b. The first pass also warmed the server's allocation path (JIT tiering, pools, caches):
        // release those allocations and time a second, warm pass. Memory comes from the first pass
        // only, so nothing freed here can be reused to flatter it.
        SetupResult? release1 = null, alloc2 = null, bind2 = null;
        CpuWindow? alloc2Cpu = null;
        if (o.WarmPass && o.Allocations > 0)
        {
            release1 = clients.RunSetup(SetupKind.Release, o.Active, o.Allocations, o.InFlight, o.SetupTimeoutMs, o.Retries);
            Report("release (Refresh 0)", release1);
            Thread.Sleep(TimeSpan.FromSeconds(Math.Min(1, o.SettleSeconds)));
            alloc2Cpu = new CpuWindow(o.ServerPid);
            alloc2Cpu.Begin();
            alloc2 = clients.RunSetup(SetupKind.Allocate, o.Active, o.Allocations, o.InFlight, o.SetupTimeoutMs, o.Retries);
            alloc2Cpu.End();
            bind2 = clients.RunSetup(SetupKind.Bind, o.Active, o.Allocations, o.InFlight, o.SetupTimeoutMs, o.Retries);
            Report("allocate (warm pass)", alloc2, alloc2Cpu);
            Report("permission+channel (warm pass)", bind2);
        }

        // 4. Closed-loop relayed round trips over the warm set, the other allocations idle.
        var udpBefore = ProcStats.UdpCounters();
        var rttCpu = new CpuWindow(o.ServerPid);
        var rtt = clients.RunClosedLoop(o.Active, o.Window, o.Payload, direct: false, o.Gso, 1, o.DurationSeconds, o.TimeoutMs, rttCpu);
        var udpAfter = ProcStats.UdpCounters();
        var rcvbufErrors = udpAfter.GetValueOrDefault("RcvbufErrors") - udpBefore.GetValueOrDefault("RcvbufErrors");
        var perCore = rttCpu.ServerCores > 0 ? rtt.PerSecond / rttCpu.ServerCores : 0;
        Console.WriteLine(FormattableString.Invariant(
            $"relayed round trips: {rtt.PerSecond:F0}/s over {rtt.Seconds:F2}s ({rtt.Ok} ok of {rtt.Sent} sent, {rtt.Lost} lost = {rtt.LossPercent:F3}%, stale {rtt.Stale}, invalid {rtt.Invalid}, send errors {rtt.SendErrors}), p50 {rtt.Histogram.Percentile(0.5)} us, p99 {rtt.Histogram.Percentile(0.99)} us"));
        Console.WriteLine(FormattableString.Invariant(
            $"  server {rttCpu.ServerCores:F2} cores ({perCore:F0} round trips per server core-second), generator {rttCpu.GeneratorCores:F2} cores, busy {rttCpu.Busy}, kernel UDP RcvbufErrors +{rcvbufErrors}"));

        var headline = alloc2 ?? alloc;
        var headlineCpu = alloc2Cpu ?? allocCpu;
        Add("allocations", $"{alloc.Done}");
        Add("alloc_failed", $"{alloc.Failed + bind.Failed + (alloc2?.Failed ?? 0) + (bind2?.Failed ?? 0)}");
        Add("alloc_fail_codes", $"{alloc.FailureText}");
        Add("alloc_per_s", $"{(headline.Seconds > 0 ? headline.Done / headline.Seconds : 0):F0}");
        Add("alloc_server_cpu", $"{headlineCpu.ServerCores:F2}");
        Add("alloc_gen_cpu", $"{headlineCpu.GeneratorCores:F2}");
        Add("alloc_cold_per_s", $"{(alloc.Seconds > 0 ? alloc.Done / alloc.Seconds : 0):F0}");
        Add("alloc_cold_server_cpu", $"{allocCpu.ServerCores:F2}");
        Add("alloc_retrans", $"{alloc.Retransmits + bind.Retransmits + (alloc2?.Retransmits ?? 0) + (bind2?.Retransmits ?? 0)}");
        Add("bind_per_s", $"{(bind.Seconds > 0 ? bind.Done / bind.Seconds : 0):F0}");
        Add("bind_server_cpu", $"{bindCpu.ServerCores:F2}");
        if (release1 is not null)
        {
            Add("release_per_s", $"{(release1.Seconds > 0 ? release1.Done / release1.Seconds : 0):F0}");
        }

        Add("rss_before_kb", $"{rssBefore}");
        Add("rss_after_kb", $"{rssAfter}");
        Add("bytes_per_alloc", $"{bytesPerAlloc:F0}");
        Add("fds_per_alloc", $"{(fdsAfter - fdsBefore) / (double)established:F2}");
        Add("rtt_per_s", $"{rtt.PerSecond:F0}");
        Add("rtt_sent", $"{rtt.Sent}");
        Add("rtt_ok", $"{rtt.Ok}");
        Add("rtt_lost", $"{rtt.Lost}");
        Add("rtt_loss_pct", $"{rtt.LossPercent:F3}");
        Add("rtt_stale", $"{rtt.Stale}");
        Add("rtt_invalid", $"{rtt.Invalid}");
        Add("rtt_send_errors", $"{rtt.SendErrors}");
        Add("rtt_p50_us", $"{rtt.Histogram.Percentile(0.5)}");
        Add("rtt_p99_us", $"{rtt.Histogram.Percentile(0.99)}");
        Add("server_cpu", $"{rttCpu.ServerCores:F2}");
        Add("rtt_per_core", $"{perCore:F0}");
        Add("gen_cpu", $"{rttCpu.GeneratorCores:F2}");
        Add("busy", $"{rttCpu.Busy}");
        Add("udp_rcvbuf_errors", $"{rcvbufErrors}");

        // 5. Open-loop latency at a fixed rate: through the relay, then directly (the loopback baseline).
        if (o.Rate > 0)
        {
            var latCpu = new CpuWindow(o.ServerPid);
            var lat = clients.RunOpenLoop(o.Active, o.Rate, o.Payload, direct: false, 1, o.LatencySeconds, 1000, o.TimeoutMs, latCpu);
            ReportOpen("relayed", lat, latCpu);
            Add("lat_rate", $"{o.Rate:F0}");
            Add("lat_sent", $"{lat.Sent}");
            Add("lat_lost", $"{lat.Lost}");
            Add("lat_late", $"{lat.Late}");
            Add("lat_p50_us", $"{lat.KernelHistogram.Percentile(0.5)}");
            Add("lat_p99_us", $"{lat.KernelHistogram.Percentile(0.99)}");
            Add("lat_p999_us", $"{lat.KernelHistogram.Percentile(0.999)}");
            Add("lat_app_p50_us", $"{lat.Histogram.Percentile(0.5)}");
            Add("lat_app_p99_us", $"{lat.Histogram.Percentile(0.99)}");
            Add("lat_server_cpu", $"{latCpu.ServerCores:F2}");
            Add("lat_gen_cpu", $"{latCpu.GeneratorCores:F2}");
            if (o.Direct)
            {
                var direct = clients.RunOpenLoop(o.Active, o.Rate, o.Payload, direct: true, 1, o.LatencySeconds, 1000, o.TimeoutMs, null);
                ReportOpen("direct (no relay)", direct, null);
                Add("direct_p50_us", $"{direct.KernelHistogram.Percentile(0.5)}");
                Add("direct_p99_us", $"{direct.KernelHistogram.Percentile(0.99)}");
                Add("direct_app_p50_us", $"{direct.Histogram.Percentile(0.5)}");
                Add("direct_app_p99_us", $"{direct.Histogram.Percentile(0.99)}");
                Add("direct_lost", $"{direct.Lost}");
                Add("added_p50_us", $"{lat.KernelHistogram.Percentile(0.5) - direct.KernelHistogram.Percentile(0.5)}");
                Add("added_p99_us", $"{lat.KernelHistogram.Percentile(0.99) - direct.KernelHistogram.Percentile(0.99)}");
            }
        }

        Add("echoed", $"{Interlocked.Read(ref peers.Echoed)}");
        Add("echo_send_errors", $"{Interlocked.Read(ref peers.SendErrors)}");

        // 6. Leave the server as we found it.
        if (o.Release)
        {
            var release = clients.RunSetup(SetupKind.Release, 0, total, o.InFlight, o.SetupTimeoutMs, 1);
            Report("release (Refresh 0)", release);
        }

        var label = o.Label.Length > 0 ? $" label={o.Label}" : "";
        Console.WriteLine($"RESULT target={o.TargetText}{label}{result}");
        return rtt.Ok > 0 ? 0 : 1;
    }

    private static void Report(string what, SetupResult r, CpuWindow? cpu = null)
    {
        var rate = r.Seconds > 0 ? r.Done / r.Seconds : 0;
        var server = cpu is null ? "" : FormattableString.Invariant($", server {cpu.ServerCores:F2} cores, generator {cpu.GeneratorCores:F2} cores");
        Console.WriteLine(FormattableString.Invariant(
            $"{what}: {r.Done} done in {r.Seconds:F2}s = {rate:F0}/s ({r.Transactions} transactions, {r.Retransmits} retransmits, {r.StaleNonces} stale nonces, failed {r.Failed}: {r.FailureText}, bad integrity {r.BadIntegrity}, unmatched {r.Invalid}, send errors {r.SendErrors}){server}"));
    }

    private static void ReportOpen(string what, TrafficResult r, CpuWindow? cpu)
    {
        var server = cpu is null ? "" : FormattableString.Invariant($", server {cpu.ServerCores:F2} cores, generator {cpu.GeneratorCores:F2} cores");
        Console.WriteLine(FormattableString.Invariant(
            $"open loop {what}: {r.Sent} sent in {r.Seconds:F2}s, {r.Ok} back, lost {r.Lost}, late {r.Late}, stale {r.Stale}, invalid {r.Invalid}; send->kernel rx p50 {r.KernelHistogram.Percentile(0.5)} us, p99 {r.KernelHistogram.Percentile(0.99)} us, p99.9 {r.KernelHistogram.Percentile(0.999)} us; send->read by the generator p50 {r.Histogram.Percentile(0.5)} us, p99 {r.Histogram.Percentile(0.99)} us{server}"));
    }
}
