using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>
/// <c>mqtt-idle</c>: the memory an idle MQTT connection costs a broker. The coordinator reads the
/// server's VmRSS, has --processes workers (the open-files limit is per process) open their share of
/// connections, reads VmRSS again once every worker has all its CONNACKs, and reports
/// (after - before) / connections. Workers bind 127.0.0.2.. before connecting so no source address runs
/// out of ephemeral ports.
/// </summary>
internal static class MqttIdleLoad
{
    public static Task<int> RunAsync(MqttLoadOptions o) => o.Worker ? WorkerAsync(o) : CoordinatorAsync(o);

    private static async Task<int> CoordinatorAsync(MqttLoadOptions o)
    {
        var rssBefore = o.ServerPid > 0 ? ProcStats.StatusKb(o.ServerPid, "VmRSS") : 0;
        var workers = new List<Process>();
        var started = Stopwatch.GetTimestamp();
        var sourcesPerWorker = Math.Max(1, o.Sources / o.Processes);
        try
        {
            for (var i = 0; i < o.Processes; i++)
            {
                var share = (o.Connections / o.Processes) + (i < o.Connections % o.Processes ? 1 : 0);
                workers.Add(StartWorker(o, i, share, i * sourcesPerWorker % o.Sources, sourcesPerWorker));
            }

            long ok = 0, failed = 0;
            using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(5));
            foreach (var worker in workers)
            {
                while (true)
                {
                    var line = await worker.StandardOutput.ReadLineAsync(deadline.Token);
                    if (line is null)
                    {
                        Console.Error.WriteLine("mqtt-idle: a worker exited before it was ready: " + await worker.StandardError.ReadToEndAsync(deadline.Token));
                        return 1;
                    }

                    if (line.StartsWith("READY ", StringComparison.Ordinal))
                    {
                        var parts = line.Split(' ');
                        ok += long.Parse(parts[1]["ok=".Length..], CultureInfo.InvariantCulture);
                        failed += long.Parse(parts[2]["failed=".Length..], CultureInfo.InvariantCulture);
                        break;
                    }

                    Console.Error.WriteLine(line);
                }
            }

            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var rssAfter = o.ServerPid > 0 ? ProcStats.StatusKb(o.ServerPid, "VmRSS") : 0;
            var bytesPer = ok > 0 && o.ServerPid > 0 ? (rssAfter - rssBefore) * 1024.0 / ok : 0;
            var label = o.Label.Length > 0 ? " label=" + o.Label : "";
            Console.WriteLine(FormattableString.Invariant(
                $"RESULT mode=mqtt-idle target={o.Target}{label} connections={o.Connections} ok={ok} failed={failed} processes={o.Processes} sources={o.Sources} open_s={seconds:F1} conn_per_s={ok / seconds:F0} rss_before_kb={rssBefore} rss_after_kb={rssAfter} bytes_per_conn={bytesPer:F0}"));
            return failed == 0 ? 0 : 1;
        }
        finally
        {
            foreach (var worker in workers)
            {
                // Closing stdin tells a worker to close its connections and exit.
                worker.StandardInput.Close();
            }

            foreach (var worker in workers)
            {
                if (!worker.WaitForExit(30_000))
                {
                    worker.Kill();
                }

                worker.Dispose();
            }
        }
    }

    private static Process StartWorker(MqttLoadOptions o, int index, int connections, int sourceOffset, int sources)
    {
        var self = typeof(MqttIdleLoad).Assembly.Location;
        var host = Environment.ProcessPath!;
        List<string> arguments = Path.GetFileNameWithoutExtension(host) == "dotnet" ? [self] : [];
        arguments.AddRange(["mqtt-idle", "--worker", "--target", o.Target.ToString(), "--connections", I(connections), "--worker-index", I(index),
            "--sources", I(sources), "--source-offset", I(sourceOffset), "--keepalive", I(o.KeepAlive), "--concurrency", I(o.Concurrency)]);
        var start = new ProcessStartInfo(host, arguments) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        return Process.Start(start)!;
    }

    private static async Task<int> WorkerAsync(MqttLoadOptions o)
    {
        var sockets = new Socket?[o.Connections];
        long ok = 0, failed = 0;
        string? firstError = null;
        using var gate = new SemaphoreSlim(o.Concurrency);
        var tasks = new Task[o.Connections];
        for (var i = 0; i < o.Connections; i++)
        {
            await gate.WaitAsync();
            var index = i;
            tasks[i] = Task.Run(async () =>
            {
                try
                {
                    var source = IPAddress.Parse(FormattableString.Invariant($"127.0.0.{2 + o.SourceOffset + (index % o.Sources)}"));
                    sockets[index] = await OpenAsync(o, source, FormattableString.Invariant($"idle-{o.WorkerIndex}-{index}"));
                    Interlocked.Increment(ref ok);
                }
                catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or InvalidDataException)
                {
                    Interlocked.Increment(ref failed);
                    Interlocked.CompareExchange(ref firstError, e.Message, null);
                }
                finally
                {
                    gate.Release();
                }
            });
        }

        await Task.WhenAll(tasks);
        if (firstError is not null)
        {
            Console.Error.WriteLine($"worker {o.WorkerIndex}: {failed} failed, first: {firstError}");
        }

        Console.WriteLine(FormattableString.Invariant($"READY ok={ok} failed={failed}"));
        await Console.In.ReadToEndAsync();
        foreach (var socket in sockets)
        {
            socket?.Dispose();
        }

        return 0;
    }

    private static async Task<Socket> OpenAsync(MqttLoadOptions o, IPAddress source, string clientId)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await socket.ConnectAsync(o.Target, timeout.Token);
            await socket.SendAsync(MqttWire.Connect(clientId, (ushort)o.KeepAlive, o.Username, o.Password), SocketFlags.None, timeout.Token);
            var connack = new byte[4];
            var read = 0;
            while (read < 4)
            {
                var n = await socket.ReceiveAsync(connack.AsMemory(read), SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    throw new InvalidDataException("closed before CONNACK");
                }

                read += n;
            }

            // §3.2: 0x20, remaining length 2, flags, return code 0 = accepted.
            if (connack[0] != 0x20 || connack[3] != 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"CONNACK {connack[0]:X2} code {connack[3]}"));
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static string I(int value) => value.ToString(CultureInfo.InvariantCulture);
}
