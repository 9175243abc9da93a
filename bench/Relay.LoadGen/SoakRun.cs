using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>
/// <c>soak</c> (issue 14 §6): the whole product at modest rates for a long time on one server. The load
/// phase runs devices, telemetry, commands, rendezvous and TURN at once (<see cref="SoakOptions.Usage"/>)
/// while <see cref="SoakSampler"/> watches the server's memory and descriptors. The drain then stops the
/// churn and new work and gives the server time to deliver what it accepted: every device comes back
/// and stays, commands queued for offline sessions go out, telemetry in flight arrives. Only then are the
/// losses counted, so a loss is a message the server acknowledged and never delivered, not one still on
/// its way.
/// </summary>
internal static class SoakRun
{
    private const double WarmupCapFraction = 1.0 / 3;
    private const double DriftLimitPercent = 5;

    /// <summary>
    /// Windows of 5 minutes (about one garbage-collection cycle of RSS at this load; SoakSampler), shorter for a
    /// short run so that at least three fit after the warm-up, and never under three samples.
    /// </summary>
    /// <summary>The flatness verdict of a kept CSV, as a run prints it; 0 when RSS and descriptors are flat.</summary>
    internal static int Judge(string csv, double minutes, double warmupMinutes, double sampleSeconds)
    {
        var samples = SoakSampler.ReadCsv(csv);
        var warmupSeconds = warmupMinutes * 60;
        var window = FlatnessWindowSeconds(minutes * 60, warmupSeconds, sampleSeconds);
        var flat = true;
        foreach (var (name, series) in new (string, Func<SoakSampler.Sample, long>)[] { ("rss_kb", static s => s.RssKb), ("fds", static s => s.Fds) })
        {
            var after = samples.Where(s => s.Seconds >= warmupSeconds).Select(series).ToList();
            var drift = SoakSampler.WindowDrift(samples, warmupSeconds, window, series);
            if (after.Count == 0 || drift is not { } d)
            {
                Console.WriteLine($"{name}: no samples after the warm-up");
                return 1;
            }

            flat &= d.DriftPercent <= DriftLimitPercent;
            Console.WriteLine(FormattableString.Invariant(
                $"{name}: samples {after.Count}, min {after.Min()} max {after.Max()} spread {100.0 * (after.Max() - after.Min()) / after.Min():F1}%; {window:F0} s window means {d.Min}..{d.Max}, drift {d.DriftPercent:F1}% (limit {DriftLimitPercent}%)"));
        }

        Console.WriteLine(flat ? "FLAT yes" : "FLAT NO");
        return flat ? 0 : 1;
    }

    internal static double FlatnessWindowSeconds(double runSeconds, double warmupSeconds, double sampleSeconds) =>
        Math.Max(3 * sampleSeconds, Math.Min(300, (runSeconds - warmupSeconds) / 3));
    private static readonly TimeSpan IntroductionTimeout = TimeSpan.FromSeconds(45);

    public static async Task<int> RunAsync(SoakOptions o)
    {
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 32,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(10),
            UseProxy = false,
        };
        using var http = new HttpClient(handler) { BaseAddress = o.Api, Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", o.Token);

        var ids = Enumerable.Range(0, o.Devices).Select(i => o.IdPrefix + i.ToString("D5", CultureInfo.InvariantCulture)).ToList();
        List<(string Id, string Secret)> credentials;
        try
        {
            var (list, provisioned, seconds) = await DeviceProvisioner.ProvisionAsync(http, o.DevicesFile, ids, o.ProvisionConcurrency, "soak");
            credentials = list;
            Console.WriteLine(FormattableString.Invariant($"RESULT mode=soak-provision devices={list.Count} provisioned_now={provisioned} provision_s={seconds:F1}"));
        }
        catch (Exception e) when (e is HttpRequestException or InvalidDataException or SocketException)
        {
            Console.Error.WriteLine("soak: provisioning failed: " + e.Message);
            return 1;
        }

        var ledger = new SoakLedger(o.Devices);
        using var churnSource = new CancellationTokenSource();
        using var stopSource = new CancellationTokenSource();
        var churn = churnSource.Token;
        var stop = stopSource.Token;

        // The subscriber first: telemetry published before it subscribed would be no one's.
        var subscriber = new SoakSubscriber(o, ledger);
        Task subscriberTask;
        try
        {
            subscriberTask = await subscriber.StartAsync(stop);
        }
        catch (Exception e) when (e is SocketException or IOException or InvalidDataException or OperationCanceledException)
        {
            Console.Error.WriteLine("soak: the telemetry subscriber could not connect: " + e.Message);
            return 1;
        }

        using var peers = o.TurnAllocations > 0 ? new EchoPeers(o.Turn!.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Loopback : IPAddress.Loopback, 4) : null;
        peers?.Start();
        var turn = peers is null ? null : new SoakTurn(o, peers.Endpoints);

        // Devices connect at about 100 a second, so the start is not itself a storm.
        var devices = credentials.Select((c, i) => new SoakDevice(i, c.Id, c.Secret, ledger, o.SelfCheck)).ToArray();
        var spread = o.Devices / 100.0;
        var deviceTasks = devices.Select((d, i) => Task.Run(() => d.RunAsync(o, o.Mqtt, Source(o, i), TimeSpan.FromSeconds(Random.Shared.NextDouble() * spread), churn, stop), CancellationToken.None)).ToArray();

        var commands = new SoakCommands(o, ledger, http);
        var sampler = new SoakSampler(o.ServerPid, o.Csv, () => (devices.Count(static d => d.Online), turn?.Live ?? 0, Interlocked.Read(ref ledger.TelemetryPublished), ledger.CommandsAccepted, Interlocked.Read(ref ledger.RendezvousAttempts)));
        var warmupSeconds = Math.Min(o.WarmupMinutes * 60, o.Minutes * 60 * WarmupCapFraction);
        Console.WriteLine(FormattableString.Invariant(
            $"soak: {o.Devices} devices, {o.Minutes:F1} min, warm-up cut {warmupSeconds / 60:F1} min, samples every {o.SampleSeconds:F0} s{(o.Csv is null ? "" : " to " + o.Csv)}; telemetry every {o.TelemetryIntervalSeconds:F0} s per device, mean online {o.MeanOnlineSeconds:F0} s, offline 1..{o.MaxOfflineSeconds:F0} s, {o.CommandRate:F1} commands/s, {o.RendezvousRate:F1} introductions/s, {o.TurnAllocations} TURN allocations"));
        Console.Out.Flush();

        var started = Stopwatch.GetTimestamp();
        var sampling = Task.Run(() => sampler.RunAsync(TimeSpan.FromSeconds(o.SampleSeconds), churn), CancellationToken.None);
        var commanding = Task.Run(() => commands.RunAsync(churn, stop), CancellationToken.None);
        var introducing = Task.Run(() => IntroduceAsync(o, devices, churn), CancellationToken.None);
        var turning = turn?.RunAsync(churn) ?? Task.CompletedTask;
        var progress = Task.Run(() => ProgressAsync(o, devices, ledger, subscriber, turn, commands, started, stop), CancellationToken.None);

        await Task.Delay(TimeSpan.FromSeconds(o.Minutes * 60));
        Console.Error.WriteLine("soak: load phase over; draining (no churn, no new work, every device back)");
        await churnSource.CancelAsync();
        await Task.WhenAll(sampling, commanding, introducing, turning);

        // The drain: until every device is online, every command followed to its end and every acked
        // telemetry message arrived, or the drain time is up.
        var drainStarted = Stopwatch.GetTimestamp();
        var drained = false;
        while (Stopwatch.GetElapsedTime(drainStarted).TotalSeconds < o.DrainSeconds)
        {
            foreach (var device in devices)
            {
                device.SweepIntroductions(IntroductionTimeout);
            }

            if (devices.All(static d => d.Online && d.InFlight == 0) && commands.Following == 0 && ledger.Telemetry().Lost == 0)
            {
                drained = true;
                break;
            }

            await Task.Delay(500);
        }

        var drainSeconds = Stopwatch.GetElapsedTime(drainStarted).TotalSeconds;
        foreach (var device in devices)
        {
            device.SweepIntroductions(IntroductionTimeout);
        }

        var online = devices.Count(static d => d.Online);
        var (acked, received, lost, duplicates) = ledger.Telemetry();
        var states = ledger.CommandStates();
        var accepted = ledger.CommandsAccepted;
        var succeeded = states.GetValueOrDefault("succeeded");
        var commandsLost = accepted - succeeded;
        await stopSource.CancelAsync();
        await Task.WhenAll(deviceTasks);
        await progress;
        await subscriberTask.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(static _ => { }, TaskScheduler.Default);
        var subscriberFault = subscriberTask.IsFaulted ? subscriberTask.Exception!.GetBaseException().Message : null;

        // The table, then the verdict.
        Console.WriteLine("SAMPLES " + SoakSampler.TableHeader);
        foreach (var sample in sampler.Samples)
        {
            Console.WriteLine("SAMPLE  " + sample.ToRow());
        }

        var rss = sampler.Drift(warmupSeconds, static s => s.RssKb);
        var fds = sampler.Drift(warmupSeconds, static s => s.Fds);
        var threads = sampler.Drift(warmupSeconds, static s => s.Threads);
        var window = FlatnessWindowSeconds(o.Minutes * 60, warmupSeconds, o.SampleSeconds);
        var rssWindows = sampler.WindowDrift(warmupSeconds, window, static s => s.RssKb);
        var fdsWindows = sampler.WindowDrift(warmupSeconds, window, static s => s.Fds);
        var afterWarmup = sampler.Samples.Count(s => s.Seconds >= warmupSeconds);
        var rssFlat = rssWindows is { DriftPercent: <= DriftLimitPercent };
        var fdsFlat = fdsWindows is { DriftPercent: <= DriftLimitPercent };
        var judged = o.ServerPid > 0 && afterWarmup >= 2;
        var stateText = string.Join(',', states.Select(static p => p.Key + ":" + p.Value.ToString(CultureInfo.InvariantCulture)));
        var failures = new List<string>();
        if (lost > 0)
        {
            failures.Add(FormattableString.Invariant($"{lost} acknowledged telemetry messages never reached the subscriber"));
        }

        if (commandsLost > 0)
        {
            failures.Add(FormattableString.Invariant($"{commandsLost} accepted commands did not succeed ({stateText})"));
        }

        if (Interlocked.Read(ref ledger.RendezvousUnanswered) > 0)
        {
            failures.Add(FormattableString.Invariant($"{ledger.RendezvousUnanswered} introductions got neither an answer nor an error within {IntroductionTimeout.TotalSeconds:F0} s while their device stayed connected"));
        }

        if (subscriberFault is not null)
        {
            failures.Add("the telemetry subscriber failed: " + subscriberFault);
        }

        if (judged && !rssFlat)
        {
            failures.Add(FormattableString.Invariant($"server RSS after the warm-up drifted {rssWindows!.Value.DriftPercent:F1}% over {window:F0} s window means (limit {DriftLimitPercent}%)"));
        }

        if (judged && !fdsFlat)
        {
            failures.Add(FormattableString.Invariant($"server descriptors after the warm-up drifted {fdsWindows!.Value.DriftPercent:F1}% over {window:F0} s window means (limit {DriftLimitPercent}%)"));
        }

        static string Series((long Min, long Max, double DriftPercent)? d, string name) =>
            d is { } v ? FormattableString.Invariant($"{name}_min={v.Min} {name}_max={v.Max} {name}_spread_pct={v.DriftPercent:F1}") : $"{name}_min=n/a {name}_max=n/a {name}_spread_pct=n/a";
        static string Windows((long Min, long Max, double DriftPercent)? d, string name) =>
            d is { } v ? FormattableString.Invariant($"{name}_window_mean_min={v.Min} {name}_window_mean_max={v.Max} {name}_drift_pct={v.DriftPercent:F1}") : $"{name}_drift_pct=n/a";

        string[] result =
        [
            FormattableString.Invariant($"RESULT mode=soak devices={o.Devices} minutes={o.Minutes:F1} warmup_min={warmupSeconds / 60:F1} samples={sampler.Samples.Count} samples_after_warmup={afterWarmup} drained={(drained ? 1 : 0)} drain_s={drainSeconds:F0} online_at_end={online}"),
            FormattableString.Invariant($"{Series(rss, "rss_kb")} {Series(fds, "fds")} {Series(threads, "threads")} window_s={window:F0} {Windows(rssWindows, "rss_kb")} {Windows(fdsWindows, "fds")}"),
            FormattableString.Invariant($"telemetry_published={ledger.TelemetryPublished} telemetry_acked={acked} telemetry_received={received} telemetry_lost={lost} telemetry_duplicates={duplicates} telemetry_skipped={ledger.TelemetrySkipped} telemetry_foreign={ledger.TelemetryForeign} resent_after_reconnect={ledger.Resent}"),
            FormattableString.Invariant($"commands_posted={ledger.CommandsPosted} commands_accepted={accepted} commands_succeeded={succeeded} commands_lost={commandsLost} command_states={(stateText.Length == 0 ? "none" : stateText)} commands_seen_by_devices={ledger.CommandsSeenByDevices} results_acked={ledger.CommandResultsAcked} commands_not_accepted={ledger.CommandsNotAccepted} refusals={ledger.Refusals} command_http_errors={ledger.CommandHttpErrors} commands_skipped={ledger.CommandFollowsSkipped}"),
            FormattableString.Invariant($"rendezvous_attempts={ledger.RendezvousAttempts} rendezvous_answered={ledger.RendezvousAnswered} rendezvous_refused={ledger.RendezvousRefused} rendezvous_abandoned={ledger.RendezvousAbandoned} rendezvous_unanswered={ledger.RendezvousUnanswered} rendezvous_offers={ledger.RendezvousOffers} rendezvous_starts={ledger.RendezvousStarts} rendezvous_other={ledger.RendezvousOther}"),
            FormattableString.Invariant($"turn_allocated={turn?.Allocated ?? 0} turn_alloc_failed={turn?.AllocateFailed ?? 0} turn_refreshed={turn?.Refreshed ?? 0} turn_refresh_failed={turn?.RefreshFailed ?? 0} turn_released={turn?.Released ?? 0} relayed_sent={turn?.Sent ?? 0} relayed_echoed={turn?.Echoed ?? 0} relayed_lost={turn?.Lost ?? 0}"),
            FormattableString.Invariant($"self_check_dropped_telemetry={ledger.SelfCheckTelemetry} self_check_unanswered_commands={ledger.SelfCheckCommands / Math.Max(1, o.SelfCheck)} connects={ledger.Connects} connect_failures={ledger.ConnectFailures} voluntary_drops={ledger.VoluntaryDrops} server_closed={ledger.ServerClosed} sessions_lost={ledger.SessionsLost} subscriber_reconnects={ledger.SubscriberReconnects}"),
            FormattableString.Invariant($"verdict={(failures.Count == 0 ? "pass" : "FAIL")}"),
        ];
        Console.WriteLine(string.Join(' ', result));
        if (ledger.FirstCommandError is not null)
        {
            Console.WriteLine("NOTE first command error: " + ledger.FirstCommandError);
        }

        if (turn?.FirstError is not null)
        {
            Console.WriteLine("NOTE first TURN error: " + turn.FirstError);
        }

        if (!judged)
        {
            Console.WriteLine(FormattableString.Invariant($"NOTE flatness not judged: {(o.ServerPid > 0 ? $"{afterWarmup} samples after the warm-up (2 needed)" : "no --server-pid")}"));
        }

        Console.WriteLine(FormattableString.Invariant(
            $"FLAT rss={(judged ? rssFlat ? "yes" : "NO" : "n/a")} fds={(judged ? fdsFlat ? "yes" : "NO" : "n/a")} threads={(judged && threads is { } t ? t.DriftPercent <= DriftLimitPercent ? "yes" : "no (reported, not judged)" : "n/a")} (highest over lowest mean of {window:F0} s windows after the first {warmupSeconds / 60:F1} min, limit {DriftLimitPercent}%)"));
        foreach (var failure in failures)
        {
            Console.WriteLine("FAIL " + failure);
        }

        return failures.Count == 0 ? 0 : 1;
    }

    private static IPAddress Source(SoakOptions o, int i) => IPAddress.Parse(FormattableString.Invariant($"127.0.0.{2 + (i % o.Sources)}"));

    /// <summary>Introductions at --rendezvous-rate between random online devices (docs/rendezvous.md, <c>connect</c>).</summary>
    private static async Task IntroduceAsync(SoakOptions o, SoakDevice[] devices, CancellationToken churn)
    {
        if (o.RendezvousRate <= 0)
        {
            return;
        }

        var start = Stopwatch.GetTimestamp();
        long launched = 0;
        var lastSweep = start;
        while (!churn.IsCancellationRequested)
        {
            var due = (long)(Stopwatch.GetElapsedTime(start).TotalSeconds * o.RendezvousRate);
            for (; launched < due; launched++)
            {
                // A few tries to find an online pair; the peer may drop before the offer reaches it,
                // which the server answers with an error: a refusal, still an answer.
                for (var attempt = 0; attempt < 8; attempt++)
                {
                    var a = devices[Random.Shared.Next(devices.Length)];
                    var b = devices[Random.Shared.Next(devices.Length)];
                    if (a != b && a.Online && b.Online)
                    {
                        _ = await a.IntroduceAsync(b.Id);
                        break;
                    }
                }
            }

            if (Stopwatch.GetElapsedTime(lastSweep).TotalSeconds >= 5)
            {
                foreach (var device in devices)
                {
                    device.SweepIntroductions(IntroductionTimeout);
                }

                lastSweep = Stopwatch.GetTimestamp();
            }

            try
            {
                await Task.Delay(50, churn);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>A line a minute on stderr, so a 30-minute run shows it is alive.</summary>
    private static async Task ProgressAsync(SoakOptions o, SoakDevice[] devices, SoakLedger ledger, SoakSubscriber subscriber, SoakTurn? turn, SoakCommands commands, long started, CancellationToken stop)
    {
        try
        {
            while (true)
            {
                await Task.Delay(TimeSpan.FromSeconds(60), stop);
                var (acked, received, _, _) = ledger.Telemetry();
                Console.Error.WriteLine(FormattableString.Invariant(
                    $"soak: {Stopwatch.GetElapsedTime(started).TotalMinutes:F0} min: online {devices.Count(static d => d.Online)}/{o.Devices}, connects {ledger.Connects}, telemetry acked {acked} received {received} (subscriber {subscriber.Received}), commands {ledger.CommandsAccepted} accepted, {commands.Following} open, introductions {ledger.RendezvousAttempts}, TURN live {turn?.Live ?? 0} echoed {turn?.Echoed ?? 0} lost {turn?.Lost ?? 0}, server RSS {(o.ServerPid > 0 ? ProcStats.StatusKb(o.ServerPid, "VmRSS") : 0)} kB"));
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
