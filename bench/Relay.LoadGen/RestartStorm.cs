using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>
/// <c>push --restart-storm S</c>: the server restarts under a connected fleet. The devices are connected
/// when this starts; the caller kills the server (SIGKILL) and starts it again on the same data. Each device
/// then reconnects on its own as a device library would: a random first delay spread over S seconds, then
/// about one attempt a second (jittered) until CONNACK 0 and SUBACK. Meanwhile <c>/healthz</c> is asked every
/// 100 ms from the moment both ports accept again. Reported: the time from then to every device back, how many attempts were
/// refused and why, and the health answers (count, failures, p50/p99/max) while the storm lasted.
/// </summary>
internal sealed class RestartStorm(PushLoadOptions o) : IPushSink
{
    private const int MaxSeconds = 600;

    public void OnCommand(string commandId, long receivedAt)
    {
    }

    public void OnResultAcked(string commandId)
    {
    }

    public void OnRawReply(string messageId)
    {
    }

    public async Task<int> RunAsync(List<(string Id, string Secret)> credentials, List<PushDevice> devices, string label)
    {
        Console.WriteLine("STORM READY");
        Console.Out.Flush();

        // The server goes away: every device's connection ends.
        var lostAt = await WhenFirstEndsAsync(devices);
        using (var all = new CancellationTokenSource(TimeSpan.FromSeconds(MaxSeconds)))
        {
            await Task.WhenAll(devices.Select(static d => d.Ended)).WaitAsync(all.Token);
        }

        foreach (var device in devices)
        {
            device.Dispose();
        }

        // Up = both the MQTT and the HTTP port accept (the listeners start in some order within one start).
        await WhenAcceptingAsync(o.Mqtt);
        var upAt = await WhenAcceptingAsync(new IPEndPoint(IPAddress.Parse(o.Http.Host), o.Http.Port));
        using var stop = new CancellationTokenSource();
        var health = PollHealthAsync(stop.Token);
        var byId = devices.ToDictionary(static d => d.Id, StringComparer.Ordinal);
        long refused = 0, failedSockets = 0;
        var refusals = new System.Collections.Concurrent.ConcurrentDictionary<string, long>(StringComparer.Ordinal);
        var back = new PushDevice?[credentials.Count];
        var lastBackAt = 0L;
        var tasks = credentials.Select((c, i) => Task.Run(async () =>
        {
            if (!byId.ContainsKey(c.Id))
            {
                return;
            }

            var source = IPAddress.Parse(FormattableString.Invariant($"127.0.0.{2 + (i % o.Sources)}"));
            await Task.Delay(TimeSpan.FromSeconds(Random.Shared.NextDouble() * o.RestartStormSpreadSeconds));
            var deadline = Stopwatch.GetTimestamp() + (MaxSeconds * Stopwatch.Frequency);
            while (Stopwatch.GetTimestamp() < deadline)
            {
                try
                {
                    back[i] = await PushDevice.ConnectAsync(o.Mqtt, source, c.Id, c.Secret, this);
                    InterlockedMax(ref lastBackAt, Stopwatch.GetTimestamp());
                    return;
                }
                catch (InvalidDataException e)
                {
                    Interlocked.Increment(ref refused);
                    refusals.AddOrUpdate(Reason(e.Message), 1, static (_, n) => n + 1);
                }
                catch (Exception e) when (e is SocketException or IOException or OperationCanceledException)
                {
                    Interlocked.Increment(ref failedSockets);
                }

                await Task.Delay(TimeSpan.FromSeconds(0.5 + Random.Shared.NextDouble()));
            }
        })).ToArray();
        await Task.WhenAll(tasks);
        stop.Cancel();
        var (probes, probeFailures, histogram) = await health;

        var reconnected = back.Count(static d => d is not null);
        foreach (var device in back)
        {
            device?.Dispose();
        }

        var seconds = lastBackAt == 0 ? double.NaN : (lastBackAt - upAt) / (double)Stopwatch.Frequency;
        var downSeconds = (upAt - lostAt) / (double)Stopwatch.Frequency;
        var why = string.Join(',', refusals.OrderBy(static p => p.Key, StringComparer.Ordinal).Select(static p => p.Key + ":" + p.Value.ToString(CultureInfo.InvariantCulture)));
        Console.WriteLine(FormattableString.Invariant(
            $"RESULT mode=restart-storm{label} devices={devices.Count} reconnected={reconnected} reconnect_s={seconds:F2} server_down_s={downSeconds:F2} spread_s={o.RestartStormSpreadSeconds:F1} refused={refused} refusals={(why.Length == 0 ? "none" : why)} socket_failures={failedSockets} healthz_probes={probes} healthz_failures={probeFailures} healthz_p50_us={histogram.Percentile(0.50)} healthz_p99_us={histogram.Percentile(0.99)} healthz_max_us={histogram.Percentile(1.0)}"));
        return reconnected == devices.Count ? 0 : 1;
    }

    private static async Task<long> WhenFirstEndsAsync(List<PushDevice> devices)
    {
        await Task.WhenAny(devices.Select(static d => d.Ended));
        return Stopwatch.GetTimestamp();
    }

    // The server is back when its MQTT port accepts a connection; polled, since it is a separate process.
    private static async Task<long> WhenAcceptingAsync(IPEndPoint server)
    {
        var deadline = Stopwatch.GetTimestamp() + (MaxSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < deadline)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(server);
                return Stopwatch.GetTimestamp();
            }
            catch (SocketException)
            {
                await Task.Delay(20);
            }
        }

        throw new IOException($"the server did not accept on {server} within {MaxSeconds} s");
    }

    private async Task<(long Probes, long Failures, LatencyHistogram Latency)> PollHealthAsync(CancellationToken stop)
    {
        // A client of its own: the run's pooled connections died with the old server process.
        using var http = new HttpClient { BaseAddress = o.Http };
        var histogram = new LatencyHistogram();
        long probes = 0, failures = 0;
        while (!stop.IsCancellationRequested)
        {
            var started = Stopwatch.GetTimestamp();
            probes++;
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                using var response = await http.GetAsync("/healthz", timeout.Token);
                if (response.IsSuccessStatusCode)
                {
                    histogram.Record((long)Stopwatch.GetElapsedTime(started).TotalMicroseconds);
                }
                else
                {
                    failures++;
                }
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
            {
                failures++;
            }

            try
            {
                await Task.Delay(100, stop);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        return (probes, failures, histogram);
    }

    // "pd-00001: CONNACK 20 code 137" -> "connack_137"; anything else by its first word.
    private static string Reason(string message)
    {
        var code = message.LastIndexOf("code ", StringComparison.Ordinal);
        return code >= 0 ? "connack_" + message[(code + 5)..].Trim() : "other";
    }

    private static void InterlockedMax(ref long target, long value)
    {
        var current = Volatile.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }
}
