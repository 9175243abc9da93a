using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Relay.LoadGen;

/// <summary>
/// <c>push</c>: the push API under load (issue 5 §6). One process holds the devices and the HTTP sender,
/// so send and receive times come from one Stopwatch. Latency is joined by command id after each phase
/// (the PUBLISH can reach the device before the 202 reaches the sender). Throughput counts commands whose
/// result the server PUBACKed, and checks a sample of them with GET /v1/commands/{id}.
/// </summary>
internal sealed class PushLoad : IPushSink, IDisposable
{
    private static readonly MediaTypeHeaderValue Json = new("application/json");

    private readonly PushLoadOptions _o;
    private readonly HttpClient _http;
    private readonly ConcurrentDictionary<string, long> _received = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _sent = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _waiters = new(StringComparer.Ordinal);
    private readonly LatencyHistogram _apiLatency = new();
    private readonly Lock _apiLatencyLock = new();
    private readonly List<PushDevice> _devices = [];
    private PushBackend? _backend;
    private volatile bool _recording;
    private volatile bool _waiting;
    private long _resultsAcked;
    private long _httpErrors;
    private string? _firstHttpError;
    private long _next;
    private long _rawSeq;

    private PushLoad(PushLoadOptions o)
    {
        _o = o;
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = o.HttpConnections,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(10),
            UseProxy = false,
        };
        _http = new HttpClient(handler) { BaseAddress = o.Http, Timeout = TimeSpan.FromSeconds(60) };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", o.Token);
    }

    public static async Task<int> RunAsync(PushLoadOptions o)
    {
        using var run = new PushLoad(o);
        try
        {
            return await run.RunCoreAsync();
        }
        catch (Exception e) when (e is SocketException or IOException or InvalidDataException or HttpRequestException)
        {
            Console.Error.WriteLine("push: " + e.Message);
            return 1;
        }
    }

    public void OnCommand(string commandId, long receivedAt)
    {
        if (_recording)
        {
            _received.TryAdd(commandId, receivedAt);
        }
    }

    public void OnResultAcked(string commandId)
    {
        Interlocked.Increment(ref _resultsAcked);
        if (_waiting)
        {
            _waiters.GetOrAdd(commandId, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    public void OnRawReply(string messageId)
    {
        if (_waiting)
        {
            _waiters.GetOrAdd(messageId, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    public void Dispose()
    {
        foreach (var device in _devices)
        {
            device.Dispose();
        }

        _backend?.Dispose();
        _http.Dispose();
    }

    private async Task<int> RunCoreAsync()
    {
        var label = _o.Label.Length > 0 ? " label=" + _o.Label : "";
        var (credentials, provisioned, provisionSeconds) = await ProvisionAsync();
        Console.WriteLine(FormattableString.Invariant($"RESULT mode=push-provision{label} devices={credentials.Count} provisioned_now={provisioned} provision_s={provisionSeconds:F1}"));

        var (connected, failed, connectSeconds) = await ConnectDevicesAsync(credentials);
        Console.WriteLine(FormattableString.Invariant($"RESULT mode=push-connect{label} devices={credentials.Count} connected={connected} failed={failed} connect_s={connectSeconds:F1} server_rss_kb={(_o.ServerPid > 0 ? ProcStats.StatusKb(_o.ServerPid, "VmRSS") : 0)}"));
        if (connected == 0)
        {
            return 1;
        }

        if (_o.RestartStormSpreadSeconds > 0)
        {
            return await new RestartStorm(_o).RunAsync(credentials, _devices, label);
        }

        if (_o.BackendUser is not null)
        {
            _backend = await PushBackend.ConnectAsync(_o.Mqtt, _o.BackendUser, _o.BackendPassword ?? "", this);
        }

        // Latency, open loop: a short unrecorded warm-up, then the measured window; raw MQTT first when asked.
        if (_backend is not null)
        {
            await OpenLoopAsync(raw: true, _o.WarmupSeconds, record: false);
            var raw = await OpenLoopAsync(raw: true, _o.LatencySeconds, record: true);
            Console.WriteLine(FormattableString.Invariant($"RESULT mode=push-latency{label} path=mqtt devices={connected} rate={_o.Rate:F0} {raw}"));
        }

        await OpenLoopAsync(raw: false, _o.WarmupSeconds, record: false);
        var api = await OpenLoopAsync(raw: false, _o.LatencySeconds, record: true);
        Console.WriteLine(FormattableString.Invariant($"RESULT mode=push-latency{label} path=api devices={connected} rate={_o.Rate:F0} {api} post_p50_us={_apiLatency.Percentile(0.50)} post_p99_us={_apiLatency.Percentile(0.99)} http_errors={Interlocked.Read(ref _httpErrors)}"));

        // Throughput, closed loop.
        var apiThroughput = await ClosedLoopAsync(raw: false);
        var sample = await SampleAsync(apiThroughput.Completed);
        Console.WriteLine(FormattableString.Invariant($"RESULT mode=push-throughput{label} path=api devices={connected} concurrency={_o.Concurrency} {apiThroughput.Summary} sampled={sample.Checked} sampled_succeeded={sample.Succeeded} http_errors={Interlocked.Read(ref _httpErrors)}"));
        if (_backend is not null)
        {
            var rawThroughput = await ClosedLoopAsync(raw: true);
            Console.WriteLine(FormattableString.Invariant($"RESULT mode=push-throughput{label} path=mqtt devices={connected} concurrency={_o.Concurrency} {rawThroughput.Summary}"));
        }

        if (_firstHttpError is not null)
        {
            Console.Error.WriteLine("push: first HTTP error: " + _firstHttpError);
        }

        var stillConnected = _devices.Count(static d => !d.Closed);
        Console.Error.WriteLine(FormattableString.Invariant($"push: {stillConnected} of {connected} devices still connected at the end"));
        return 0;
    }

    // --- provisioning -------------------------------------------------------------------------------

    private Task<(List<(string Id, string Secret)> Credentials, int Provisioned, double Seconds)> ProvisionAsync()
    {
        var ids = Enumerable.Range(0, _o.Devices).Select(i => _o.IdPrefix + i.ToString("D5", CultureInfo.InvariantCulture)).ToList();
        return DeviceProvisioner.ProvisionAsync(_http, _o.DevicesFile, ids, _o.ProvisionConcurrency, "push");
    }

    // --- devices ------------------------------------------------------------------------------------

    private async Task<(int Connected, int Failed, double Seconds)> ConnectDevicesAsync(List<(string Id, string Secret)> credentials)
    {
        var started = Stopwatch.GetTimestamp();
        var slots = new PushDevice?[credentials.Count];
        var failed = 0;
        string? firstError = null;
        long done = 0;
        await Parallel.ForEachAsync(Enumerable.Range(0, credentials.Count), new ParallelOptions { MaxDegreeOfParallelism = _o.ConnectConcurrency }, async (i, ct) =>
        {
            var source = IPAddress.Parse(FormattableString.Invariant($"127.0.0.{2 + (i % _o.Sources)}"));
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    slots[i] = await PushDevice.ConnectAsync(_o.Mqtt, source, credentials[i].Id, credentials[i].Secret, this);
                    break;
                }
                catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or InvalidDataException)
                {
                    if (attempt == 3)
                    {
                        Interlocked.Increment(ref failed);
                        Interlocked.CompareExchange(ref firstError, e.Message, null);
                        break;
                    }

                    await Task.Delay(1000, ct);
                }
            }

            var n = Interlocked.Increment(ref done);
            if (n % 1000 == 0)
            {
                Console.Error.WriteLine(FormattableString.Invariant($"push: {n} devices connected or given up, {Stopwatch.GetElapsedTime(started).TotalSeconds:F0} s"));
            }
        });

        if (firstError is not null)
        {
            Console.Error.WriteLine($"push: {failed} devices failed to connect; first: {firstError}");
        }

        _devices.AddRange(slots.OfType<PushDevice>());
        return (_devices.Count, failed, Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    private PushDevice NextDevice()
    {
        var n = Interlocked.Increment(ref _next);
        return _devices[(int)(n % _devices.Count)];
    }

    // --- open loop (latency) ------------------------------------------------------------------------

    private async Task<string> OpenLoopAsync(bool raw, double seconds, bool record)
    {
        _sent.Clear();
        _received.Clear();
        _recording = record;
        var cpu = new CpuWindow(_o.ServerPid);
        cpu.Begin();
        var start = Stopwatch.GetTimestamp();
        var tasks = new List<Task>();
        long launched = 0, skipped = 0;
        var inFlight = 0;
        var cap = Math.Max(1000, (int)(_o.Rate * 2));
        while (true)
        {
            var elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (elapsed >= seconds)
            {
                break;
            }

            var due = (long)(elapsed * _o.Rate);
            for (; launched < due; launched++)
            {
                if (Volatile.Read(ref inFlight) >= cap)
                {
                    skipped++;
                    continue;
                }

                Interlocked.Increment(ref inFlight);
                var device = NextDevice();
                tasks.Add(Task.Run(async () =>
                {
                    try
                    {
                        if (raw)
                        {
                            var id = PushDevice.RawPrefix + Interlocked.Increment(ref _rawSeq).ToString(CultureInfo.InvariantCulture);
                            var sentAt = Stopwatch.GetTimestamp();
                            if (record)
                            {
                                _sent[id] = sentAt;
                            }

                            await _backend!.PublishAsync(device.Id, id);
                        }
                        else
                        {
                            await PostCommandAsync(device.Id, record);
                        }
                    }
                    finally
                    {
                        Interlocked.Decrement(ref inFlight);
                    }
                }));
            }

            await Task.Delay(1);
        }

        var sendSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        await Task.WhenAll(tasks);
        // Drain: every accepted command should reach its device; wait (bounded) for the stragglers.
        var deadline = Stopwatch.GetTimestamp() + (15 * Stopwatch.Frequency);
        while (_sent.Keys.Any(id => !_received.ContainsKey(id)) && Stopwatch.GetTimestamp() < deadline)
        {
            await Task.Delay(50);
        }

        cpu.End();
        _recording = false;
        var histogram = new LatencyHistogram();
        foreach (var (id, sentAt) in _sent)
        {
            if (_received.TryGetValue(id, out var receivedAt))
            {
                histogram.Record((receivedAt - sentAt) * 1_000_000 / Stopwatch.Frequency);
            }
        }

        return FormattableString.Invariant(
            $"sent={_sent.Count} received={histogram.Count} lost={_sent.Count - histogram.Count} skipped={skipped} achieved_rate={_sent.Count / sendSeconds:F0} lat_p50_us={histogram.Percentile(0.50)} lat_p99_us={histogram.Percentile(0.99)} lat_max_us={histogram.Percentile(1.0)} server_cpu={cpu.ServerCores:F2} gen_cpu={cpu.GeneratorCores:F2} busy={cpu.Busy}");
    }

    /// <summary>POST one command; returns its id, or null on an error (counted).</summary>
    private async Task<string?> PostCommandAsync(string device, bool record)
    {
        var body = Encoding.UTF8.GetBytes("{\"name\":\"bench\",\"payload\":{\"n\":1},\"ttlSeconds\":600,\"qos\":1}");
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = Json;
        var sentAt = Stopwatch.GetTimestamp();
        try
        {
            using var response = await _http.PostAsync($"/v1/devices/{device}/commands", content);
            var bytes = await response.Content.ReadAsByteArrayAsync();
            var answeredAt = Stopwatch.GetTimestamp();
            if (response.StatusCode != HttpStatusCode.Accepted)
            {
                Interlocked.Increment(ref _httpErrors);
                Interlocked.CompareExchange(ref _firstHttpError, $"{(int)response.StatusCode} {Encoding.UTF8.GetString(bytes)}", null);
                return null;
            }

            var id = ReadString(bytes, "id");
            if (record)
            {
                _sent[id] = sentAt;
                lock (_apiLatencyLock)
                {
                    _apiLatency.Record((answeredAt - sentAt) * 1_000_000 / Stopwatch.Frequency);
                }
            }

            return id;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or InvalidDataException)
        {
            Interlocked.Increment(ref _httpErrors);
            Interlocked.CompareExchange(ref _firstHttpError, e.Message, null);
            return null;
        }
    }

    // --- closed loop (throughput) -------------------------------------------------------------------

    private async Task<(string Summary, List<string> Completed)> ClosedLoopAsync(bool raw)
    {
        _waiters.Clear();
        _waiting = true;
        long completed = 0, timedOut = 0;
        var measuring = false;
        var completedIds = new ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, _o.Concurrency).Select(worker => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var device = NextDevice();
                string? id;
                if (raw)
                {
                    id = PushDevice.RawPrefix + Interlocked.Increment(ref _rawSeq).ToString(CultureInfo.InvariantCulture);
                    _waiters.GetOrAdd(id, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
                    await _backend!.PublishAsync(device.Id, id);
                }
                else
                {
                    id = await PostCommandAsync(device.Id, record: false);
                    if (id is null)
                    {
                        await Task.Delay(10);
                        continue;
                    }
                }

                var waiter = _waiters.GetOrAdd(id, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
                try
                {
                    await waiter.Task.WaitAsync(TimeSpan.FromSeconds(10));
                    if (Volatile.Read(ref measuring))
                    {
                        Interlocked.Increment(ref completed);
                        completedIds.Enqueue(id);
                    }
                }
                catch (TimeoutException)
                {
                    Interlocked.Increment(ref timedOut);
                }
                finally
                {
                    _waiters.TryRemove(id, out _);
                }
            }
        })).ToArray();

        await Task.Delay(TimeSpan.FromSeconds(_o.WarmupSeconds));
        var cpu = new CpuWindow(_o.ServerPid);
        var errorsBefore = Interlocked.Read(ref _httpErrors);
        Volatile.Write(ref measuring, true);
        var start = Stopwatch.GetTimestamp();
        cpu.Begin();
        await Task.Delay(TimeSpan.FromSeconds(_o.DurationSeconds));
        Volatile.Write(ref measuring, false);
        var count = Interlocked.Read(ref completed);
        var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        cpu.End();
        await stop.CancelAsync();
        await Task.WhenAll(workers);
        _waiting = false;
        var summary = FormattableString.Invariant(
            $"completed={count} per_s={count / seconds:F0} timed_out={Interlocked.Read(ref timedOut)} errors={Interlocked.Read(ref _httpErrors) - errorsBefore} server_cpu={cpu.ServerCores:F2} gen_cpu={cpu.GeneratorCores:F2} busy={cpu.Busy}");
        return (summary, [.. completedIds]);
    }

    /// <summary>GET /v1/commands/{id} for an evenly spread sample of the completed commands: is the result stored?</summary>
    private async Task<(int Checked, int Succeeded)> SampleAsync(List<string> completed)
    {
        if (completed.Count == 0 || _o.Sample == 0)
        {
            return (0, 0);
        }

        var step = Math.Max(1, completed.Count / _o.Sample);
        var sample = completed.Where((_, i) => i % step == 0).Take(_o.Sample).ToList();
        var succeeded = 0;
        await Parallel.ForEachAsync(sample, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (id, ct) =>
        {
            try
            {
                var bytes = await _http.GetByteArrayAsync($"/v1/commands/{id}", ct);
                if (ReadString(bytes, "state") == "succeeded")
                {
                    Interlocked.Increment(ref succeeded);
                }
            }
            catch (HttpRequestException)
            {
            }
        });
        return (sample.Count, succeeded);
    }

    /// <summary>The string value of a top-level property of a JSON body; InvalidDataException when there is none.</summary>
    internal static string ReadString(byte[] json, string property)
    {
        using var document = JsonDocument.Parse(json);
        if (document.RootElement.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.String)
        {
            return value.GetString()!;
        }

        throw new InvalidDataException($"no '{property}' in {Encoding.UTF8.GetString(json)}");
    }
}
