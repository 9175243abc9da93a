using System.Diagnostics;
using System.Net.Sockets;

namespace Relay.LoadGen;

internal static class LoadRun
{
    public static async Task<int> RunAsync(LoadOptions o)
    {
        var run = new RunState();
        var batched = o.Transport == LoadTransport.Udp && o.Io == UdpIo.Batched;
        var io = o.Transport != LoadTransport.Udp ? "" : batched ? $" io=batched threads={o.Threads} gso={o.Gso}" : " io=simple";
        var ioResult = o.Transport != LoadTransport.Udp ? "" : batched ? $" io=batched{(o.Gso ? "+gso" : "")}" : " io=simple";
        Console.WriteLine(FormattableString.Invariant(
            $"stun load: target={o.TargetText} transport={o.Transport.ToString().ToLowerInvariant()}{io} sockets={o.Sockets} window={o.Window} warmup={o.WarmupSeconds}s duration={o.DurationSeconds}s timeout={o.TimeoutMs}ms fingerprint={o.Fingerprint} connected={o.Connected}"));

        // Portable workers (one per socket, async, refilled by a shared sweeper) or batched threads
        // (each owns several sockets and sweeps its own timeouts).
        var workers = Array.Empty<LoadWorker>();
        var threads = Array.Empty<BatchedUdpWorker>();
        try
        {
            if (batched)
            {
                threads = new BatchedUdpWorker[o.Threads];
                for (var t = 0; t < threads.Length; t++)
                {
                    var share = (o.Sockets / o.Threads) + (t < o.Sockets % o.Threads ? 1 : 0);
                    threads[t] = new BatchedUdpWorker(run, o.Target, share, o.Window, o.Fingerprint, o.Connected, o.Gso, o.TimeoutMs, t);
                }
            }
            else
            {
                workers = new LoadWorker[o.Sockets];
                for (var i = 0; i < workers.Length; i++)
                {
                    workers[i] = o.Transport == LoadTransport.Udp
                        ? new UdpLoadWorker(run, o.Target, o.Window, o.Fingerprint, i, o.Connected)
                        : new TcpLoadWorker(run, o.Target, o.Window, o.Fingerprint, i);
                }
            }
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"error: cannot create sockets for {o.TargetText}: {e.Message}");
            DisposeAll(workers, threads);
            return 1;
        }

        LoadCounters[] counters = batched ? threads : workers;

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
            DisposeAll(workers, threads);
            return 1;
        }

        if (threads.Any(t => o.Gso && !t.UsesGso))
        {
            Console.WriteLine("note: the kernel refused UDP_SEGMENT; sending one datagram per message instead of GSO");
        }

        foreach (var t in threads)
        {
            t.Start();
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
                var ok = counters.Sum(w => Volatile.Read(ref w.Ok));
                var lost = counters.Sum(w => Volatile.Read(ref w.Lost));
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
        DisposeAll(workers, threads);
        await Task.WhenAny(Task.WhenAll(workers.Select(w => w.Completion)), Task.Delay(2000));

        var histogram = new LatencyHistogram();
        long sent = 0, okTotal = 0, lostTotal = 0, stale = 0, invalid = 0, errors = 0, reconnects = 0;
        foreach (var w in counters)
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
            $"RESULT target={o.TargetText}{label} transport={o.Transport.ToString().ToLowerInvariant()}{ioResult} tps={tps:F0} sent={sent} ok={okTotal} lost={lostTotal} loss_pct={lossPct:F3} stale={stale} invalid={invalid} errors={errors} reconnects={reconnects} p50_us={p50} p90_us={p90} p99_us={p99} p999_us={p999} sockets={o.Sockets} window={o.Window} duration_s={seconds:F2}"));
        return okTotal > 0 ? 0 : 1;
    }

    private static void DisposeAll(LoadWorker[] workers, BatchedUdpWorker[] threads)
    {
        foreach (var w in workers)
        {
            w?.Dispose();
        }

        foreach (var t in threads)
        {
            t?.Dispose();
        }
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
