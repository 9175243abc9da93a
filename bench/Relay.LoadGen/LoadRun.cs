using System.Diagnostics;
using System.Net.Sockets;

namespace Relay.LoadGen;

internal static class LoadRun
{
    public static async Task<int> RunAsync(LoadOptions o)
    {
        var run = new RunState();
        var workers = new LoadWorker[o.Sockets];
        for (var i = 0; i < workers.Length; i++)
        {
            workers[i] = o.Transport == LoadTransport.Udp
                ? new UdpLoadWorker(run, o.Target, o.Window, o.Fingerprint, i, o.Connected)
                : new TcpLoadWorker(run, o.Target, o.Window, o.Fingerprint, i);
        }

        Console.WriteLine(FormattableString.Invariant(
            $"stun load: target={o.TargetText} transport={o.Transport.ToString().ToLowerInvariant()} sockets={o.Sockets} window={o.Window} warmup={o.WarmupSeconds}s duration={o.DurationSeconds}s timeout={o.TimeoutMs}ms fingerprint={o.Fingerprint} connected={o.Connected}"));

        using var sweeperStop = new CancellationTokenSource();
        try
        {
            using (var connect = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
            {
                await Task.WhenAll(workers.Select(w => w.StartAsync(connect.Token)));
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
            Console.Error.WriteLine($"error: cannot start load against {o.TargetText}: {e.Message}");
            foreach (var w in workers)
            {
                w.Dispose();
            }

            return 1;
        }

        var sweeper = SweepAsync(workers, o.TimeoutMs, sweeperStop.Token);

        await Task.Delay(TimeSpan.FromSeconds(o.WarmupSeconds));
        var start = Stopwatch.GetTimestamp();
        run.Phase = RunPhase.Measure;

        var end = start + (long)(o.DurationSeconds * Stopwatch.Frequency);
        long lastOk = 0;
        var lastTick = start;
        while (true)
        {
            var remaining = end - Stopwatch.GetTimestamp();
            if (remaining <= 0)
            {
                break;
            }

            // Whole milliseconds, rounded up: a sub-millisecond Task.Delay completes at once and
            // would turn the tail of the run into a busy loop.
            var sleepMs = (int)Math.Ceiling(Math.Min(remaining, Stopwatch.Frequency) * 1000.0 / Stopwatch.Frequency);
            await Task.Delay(sleepMs);
            var tick = Stopwatch.GetTimestamp();
            if (!o.Quiet && tick - lastTick >= Stopwatch.Frequency / 2)
            {
                var ok = workers.Sum(w => Volatile.Read(ref w.Ok));
                var lost = workers.Sum(w => Volatile.Read(ref w.Lost));
                var rate = (ok - lastOk) * (double)Stopwatch.Frequency / (tick - lastTick);
                Console.WriteLine(FormattableString.Invariant(
                    $"  t={(tick - start) / (double)Stopwatch.Frequency,5:F1}s  {rate,10:F0} tps  ok={ok} lost={lost}"));
                lastOk = ok;
                lastTick = tick;
            }
        }

        run.Phase = RunPhase.Drain;
        var stop = Stopwatch.GetTimestamp();

        await sweeperStop.CancelAsync();
        await sweeper;
        foreach (var w in workers)
        {
            w.Dispose();
        }

        await Task.WhenAny(Task.WhenAll(workers.Select(w => w.Completion)), Task.Delay(2000));

        var histogram = new LatencyHistogram();
        long sent = 0, okTotal = 0, lostTotal = 0, stale = 0, invalid = 0, errors = 0, reconnects = 0;
        foreach (var w in workers)
        {
            histogram.Add(w.Histogram);
            sent += w.Sent;
            okTotal += w.Ok;
            lostTotal += w.Lost;
            stale += w.Stale;
            invalid += w.Invalid;
            errors += w.Errors;
            reconnects += w.Reconnects;
        }

        var seconds = (stop - start) / (double)Stopwatch.Frequency;
        var tps = okTotal / seconds;
        var lossPct = sent == 0 ? 0 : 100.0 * lostTotal / sent;
        var p50 = histogram.Percentile(0.50);
        var p90 = histogram.Percentile(0.90);
        var p99 = histogram.Percentile(0.99);
        var p999 = histogram.Percentile(0.999);

        Console.WriteLine(FormattableString.Invariant(
            $"{o.TargetText}: {tps:F0} Binding transactions/s over {seconds:F2}s ({okTotal} ok of {sent} sent, {lostTotal} lost = {lossPct:F2}%), latency p50 {p50} us, p99 {p99} us"));
        var label = o.Label.Length > 0 ? $" label={o.Label}" : "";
        Console.WriteLine(FormattableString.Invariant(
            $"RESULT target={o.TargetText}{label} transport={o.Transport.ToString().ToLowerInvariant()} tps={tps:F0} sent={sent} ok={okTotal} lost={lostTotal} loss_pct={lossPct:F3} stale={stale} invalid={invalid} errors={errors} reconnects={reconnects} p50_us={p50} p90_us={p90} p99_us={p99} p999_us={p999} sockets={o.Sockets} window={o.Window} duration_s={seconds:F2}"));
        return okTotal > 0 ? 0 : 1;
    }

    private static async Task SweepAsync(LoadWorker[] workers, int timeoutMs, CancellationToken cancellationToken)
    {
        var timeoutTicks = timeoutMs * Stopwatch.Frequency / 1000;
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(Math.Max(5, timeoutMs / 4)));
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken))
            {
                var deadline = Stopwatch.GetTimestamp() - timeoutTicks;
                foreach (var w in workers)
                {
                    w.ExpireOlderThan(deadline);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Normal shutdown.
        }
    }
}
