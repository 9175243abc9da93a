using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Relay.DeviceClient;
using Relay.Protocol.Stun;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Hostile.Suite;

/// <summary>
/// The server of the hostile-client suite (issue 14 §3): the Release build as a separate process, so its RSS
/// is the server's alone, with modest limits so every attack reaches them quickly, TLS on every listener
/// that has one, and a <see cref="Sentinel"/>: a registered device on 127.0.0.1 that publishes QoS 1
/// telemetry to a back-end subscriber (mosquitto_sub) during each attack and takes a push command after it.
/// Attackers come from 127.0.0.2 and up, so per-IP limits hit them and never the sentinel.
/// </summary>
public sealed class HostileServer : IAsyncLifetime
{
    public const string ApiToken = "hostile-suite-admin-token-0123456789";
    public const string BackEndPassword = "backend-password-5d1e";
    public const string EvePassword = "eve-password-77ac";

    // The limits the attacks run into; each is named where an attack relies on it.
    public const int MaxPendingOutputBytes = 256 * 1024;
    public const int ConnectTimeoutSeconds = 2;
    public const int StunMessageTimeoutSeconds = 2;
    public const int AuthFailuresPerMinute = 5;
    public const int MaxRetainedPayloadBytes = 16 * 1024;
    public const int MaxRetainedBytesPerClient = 64 * 1024;
    public const int MaxIntroductionsPerMinute = 5;
    public const int HttpRequestHeadersTimeoutSeconds = 2;
    public const int HttpMaxConnectionsPerIp = 40;

    private readonly ConcurrentDictionary<string, string> _secrets = new(StringComparer.Ordinal);
    private string _work = string.Empty;
    private ToolProcess? _process;
    private ToolProcess? _backEnd;
    private int _serverPid;

    public int StunPort { get; private set; }

    public int StunTlsPort { get; private set; }

    public int MqttPort { get; private set; }

    public int MqttTlsPort { get; private set; }

    public int HttpPort { get; private set; }

    public int HttpsPort { get; private set; }

    public Sentinel Sentinel { get; private set; } = null!;

    public HttpClient Http { get; private set; } = null!;

    public string Transcript => _process?.Transcript ?? string.Empty;

    /// <summary>The generated secret of a device registered over the API (sentinel, mallory, trudy).</summary>
    public string Secret(string device) => _secrets[device];

    public async Task InitializeAsync()
    {
        _work = Directory.CreateTempSubdirectory("relay-hostile-").FullName;
        var pki = TestPki.Create(_work);
        var data = Path.Combine(_work, "data");
        StunPort = FreePorts.UdpAndTcpPair();
        StunTlsPort = FreePorts.Tcp();
        MqttPort = FreePorts.Tcp();
        MqttTlsPort = FreePorts.Tcp();
        HttpPort = FreePorts.Tcp();
        HttpsPort = FreePorts.Tcp();
        string I(long value) => value.ToString(CultureInfo.InvariantCulture);

        // The ports given here come after RelayServerProcess's own choices; on the command line the last value wins.
        _process = RelayServerProcess.Start(
            data,
            $"--Relay:Stun:Port={I(StunPort)}",
            $"--Relay:Stun:TlsPort={I(StunTlsPort)}",
            $"--Relay:Mqtt:Port={I(MqttPort)}",
            $"--Relay:Mqtt:TlsPort={I(MqttTlsPort)}",
            $"--Relay:Http:Port={I(HttpPort)}",
            $"--Relay:Http:TlsPort={I(HttpsPort)}",
            $"--Relay:Tls:CertificatePath={pki.CertificatePath}",
            $"--Relay:Tls:KeyPath={pki.KeyPath}",
            $"--Relay:Api:BootstrapToken={ApiToken}",
            "--Relay:Mqtt:ServiceAccounts:0:Name=backend",
            $"--Relay:Mqtt:ServiceAccounts:0:Password={BackEndPassword}",
            "--Relay:Mqtt:ServiceAccounts:0:Grants:0=devices/#",
            // Eve: a back end of someone else's, allowed only mallory's subtree and telemetry/#.
            "--Relay:Mqtt:ServiceAccounts:1:Name=eve",
            $"--Relay:Mqtt:ServiceAccounts:1:Password={EvePassword}",
            "--Relay:Mqtt:ServiceAccounts:1:Grants:0=devices/mallory/#",
            "--Relay:Mqtt:ServiceAccounts:1:Grants:1=telemetry/#",
            $"--Relay:Mqtt:MaxPendingOutputBytes={I(MaxPendingOutputBytes)}",
            $"--Relay:Mqtt:ConnectTimeoutSeconds={I(ConnectTimeoutSeconds)}",
            $"--Relay:Mqtt:AuthFailuresPerMinutePerIp={I(AuthFailuresPerMinute)}",
            $"--Relay:Mqtt:MaxRetainedPayloadBytes={I(MaxRetainedPayloadBytes)}",
            $"--Relay:Mqtt:MaxRetainedBytesPerClient={I(MaxRetainedBytesPerClient)}",
            "--Relay:Mqtt:MaxRetainedMessagesPerClient=50",
            "--Relay:Mqtt:MaxRetainedBytes=1048576",
            "--Relay:Mqtt:MaxConnectionsPerIp=64",
            "--Relay:Mqtt:MaxQueuedMessages=100",
            "--Relay:Mqtt:SysIntervalSeconds=0",
            "--Relay:Rendezvous:Policy=Any",
            $"--Relay:Rendezvous:MaxIntroductionsPerMinute={I(MaxIntroductionsPerMinute)}",
            "--Relay:Rendezvous:MaxQueuedMessagesPerDevice=8",
            $"--Relay:Stun:Tcp:MessageTimeoutSeconds={I(StunMessageTimeoutSeconds)}",
            "--Relay:Stun:Tcp:MaxConnectionsPerIp=32",
            $"--Relay:Http:RequestHeadersTimeoutSeconds={I(HttpRequestHeadersTimeoutSeconds)}",
            $"--Relay:Http:MaxConnectionsPerIp={I(HttpMaxConnectionsPerIp)}");
        _process.Describe = async () => await TryScrapeAsync();
        await RelayServerProcess.WaitForBannerAsync(_process);
        _serverPid = ServerPid(_process.Id);

        Http = PushTestKit.Client(HttpPort, ApiToken);
        foreach (var device in new[] { "sentinel", "mallory", "trudy" })
        {
            using var response = await Http.PostAsJsonAsync("/v1/devices", new { id = device });
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.Created, $"{(int)response.StatusCode}: {body}");
            using var document = JsonDocument.Parse(body);
            _secrets[device] = document.RootElement.GetProperty("secret").GetString()!;
        }

        // The back end: mosquitto's own client, a persistent session (-c) so a reconnect would lose nothing
        // either, printing every telemetry payload the sentinel's publishes deliver.
        _backEnd = ToolProcess.Start(
            "mosquitto_sub",
            ["-h", "127.0.0.1", "-p", I(MqttPort), "-V", "5", "-q", "1", "-c", "-i", "suite-backend", "-x", "3600",
             "-u", "backend", "-P", BackEndPassword, "-t", "devices/sentinel/telemetry/#", "-v"],
            TimeSpan.FromMinutes(15));
        await Poll.UntilAsync(async () => await MetricAsync("relay_mqtt_subscriptions") >= 1, "the back end to subscribe", describe: () => Task.FromResult(_backEnd.Transcript));

        Sentinel = await Sentinel.StartAsync(this);

        // The warm-up: one round of everything the sentinel check does, so the RSS a first attack starts from
        // already includes the JIT, the listeners' pools and the stores' caches.
        await Sentinel.BeginAsync();
        await Sentinel.AssertServedAsync("the warm-up");
    }

    /// <summary>The lines mosquitto_sub printed: "topic payload".</summary>
    public IReadOnlyList<string> BackEndLines => _backEnd!.StdoutLines;

    public string BackEndTranscript => _backEnd!.Transcript;

    /// <summary>The server's resident set (VmRSS of /proc/PID/status), in bytes.</summary>
    public long Rss()
    {
        AssertAlive();
        foreach (var line in File.ReadLines($"/proc/{_serverPid.ToString(CultureInfo.InvariantCulture)}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException("no VmRSS line");
    }

    public void AssertAlive()
    {
        Assert.False(_process!.HasExited, $"the server exited:\n{_process.Transcript}");
        Assert.True(Directory.Exists($"/proc/{_serverPid.ToString(CultureInfo.InvariantCulture)}"), $"the server (pid {_serverPid}) is gone:\n{_process.Transcript}");
    }

    /// <summary>One sample of /metrics: the exact series text (<c>name{labels}</c>), or the family's sum over every label set when only a name is given.</summary>
    public async Task<double> MetricAsync(string series)
    {
        var text = await Http.GetStringAsync("/metrics");
        double sum = 0;
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var space = line.LastIndexOf(' ');
            var name = line[..space];
            if (name == series || (!series.Contains('{', StringComparison.Ordinal) && (name == series || name.StartsWith(series + "{", StringComparison.Ordinal))))
            {
                sum += double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return sum;
    }

    /// <summary>The non-zero samples of the families starting with <paramref name="prefix"/>, for failure messages.</summary>
    public async Task<string> MetricsTextAsync(string prefix) =>
        string.Join('\n', (await Http.GetStringAsync("/metrics")).Split('\n').Where(l => l.StartsWith(prefix, StringComparison.Ordinal) && !l.EndsWith(" 0", StringComparison.Ordinal)));

    /// <summary>Waits until a series reaches <paramref name="atLeast"/>; the failure shows the scrape.</summary>
    public Task WaitForMetricAsync(string series, double atLeast, string what, TimeSpan? bound = null) =>
        Poll.UntilAsync(async () => await MetricAsync(series) >= atLeast, what, bound ?? TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(100), TryScrapeAsync);

    /// <summary>Waits until a gauge is back at or under <paramref name="atMost"/> (the server dropped an attack's connections).</summary>
    public Task WaitForGaugeAtMostAsync(string series, double atMost, string what) =>
        Poll.UntilAsync(async () => await MetricAsync(series) <= atMost, what, TimeSpan.FromSeconds(60), TimeSpan.FromMilliseconds(100), TryScrapeAsync);

    public async Task DisposeAsync()
    {
        if (Sentinel is not null)
        {
            await Sentinel.DisposeAsync();
        }

        if (_backEnd is not null)
        {
            await _backEnd.DisposeAsync();
        }

        Http?.Dispose();
        if (_process is not null)
        {
            await _process.DisposeAsync();
        }

        try
        {
            Directory.Delete(_work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private async Task<string> TryScrapeAsync()
    {
        try
        {
            using var http = PushTestKit.Client(HttpPort, ApiToken);
            http.Timeout = TimeSpan.FromSeconds(10);
            var text = await http.GetStringAsync("/metrics");
            return string.Join('\n', text.Split('\n').Where(static l => l.Length > 0 && l[0] != '#' && !l.EndsWith(" 0", StringComparison.Ordinal)));
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return $"/metrics: {e.Message}";
        }
    }

    /// <summary>ToolProcess runs the server under coreutils <c>timeout</c>: the server is its only child.</summary>
    private static int ServerPid(int timeoutPid)
    {
        var children = File.ReadAllText($"/proc/{timeoutPid.ToString(CultureInfo.InvariantCulture)}/task/{timeoutPid.ToString(CultureInfo.InvariantCulture)}/children").Trim();
        Assert.False(string.IsNullOrEmpty(children), "the server process has not started under timeout");
        return int.Parse(children.Split(' ')[0], CultureInfo.InvariantCulture);
    }
}

/// <summary>
/// The well-behaved client each attack must not hurt: the device library (RelayDeviceClient) as device
/// <c>sentinel</c> on 127.0.0.1. During an attack it publishes QoS 1 telemetry; afterwards every message the
/// server acknowledged must have reached the back end, a STUN Binding over UDP, <c>/healthz</c> and a push
/// command to it must all be answered, and it must never have been disconnected.
/// </summary>
public sealed class Sentinel : IAsyncDisposable
{
    private readonly HostileServer _server;
    private readonly RelayDeviceClient _client;
    private readonly ConcurrentQueue<int> _acknowledged = new();
    private readonly ConcurrentQueue<string> _failures = new();
    private int _disconnects;
    private int _next;
    private CancellationTokenSource? _stop;
    private Task? _traffic;

    private Sentinel(HostileServer server, RelayDeviceClient client)
    {
        _server = server;
        _client = client;
    }

    internal static async Task<Sentinel> StartAsync(HostileServer server)
    {
        var client = new RelayDeviceClient(new DeviceClientOptions
        {
            Server = new Uri($"mqtt://127.0.0.1:{server.MqttPort.ToString(CultureInfo.InvariantCulture)}"),
            DeviceId = "sentinel",
            Secret = server.Secret("sentinel"),
            Protocol = MqttProtocolPreference.V5,
            OperationTimeout = TimeSpan.FromSeconds(20),
        });
        var sentinel = new Sentinel(server, client);
        client.OnCommand("ping", static (command, _) => Task.FromResult(CommandResult.Success()));
        client.StateChanged += (_, e) =>
        {
            if (e.Previous == DeviceConnectionState.Connected)
            {
                Interlocked.Increment(ref sentinel._disconnects);
            }
        };
        await client.StartAsync();
        using var connect = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await client.WaitConnectedAsync(connect.Token);
        Interlocked.Exchange(ref sentinel._disconnects, 0);
        return sentinel;
    }

    /// <summary>Starts the sentinel's telemetry: QoS 1, one message every 20 ms, each counted once PUBACKed.</summary>
    public Task BeginAsync()
    {
        _stop = new CancellationTokenSource();
        var stop = _stop.Token;
        _traffic = Task.Run(async () =>
        {
            using var pace = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
            while (await pace.WaitForNextTickAsync(stop).AsTask().ContinueWith(static t => !t.IsCanceled && t.Result, TaskScheduler.Default))
            {
                var n = Interlocked.Increment(ref _next);
                try
                {
                    // While connected, PublishAsync returns on PUBACK; a disconnect is a failure on its own.
                    await _client.PublishTelemetryAsync("beat", Encoding.UTF8.GetBytes($"{{\"n\":{n.ToString(CultureInfo.InvariantCulture)}}}"), CancellationToken.None);
                    if (Volatile.Read(ref _disconnects) == 0)
                    {
                        _acknowledged.Enqueue(n);
                    }
                }
                catch (Exception e) when (e is TimeoutException or InvalidOperationException or IOException)
                {
                    _failures.Enqueue($"publish {n}: {e.GetType().Name}: {e.Message}");
                }
            }
        });
        return Task.CompletedTask;
    }

    /// <summary>Ends the attack's telemetry and checks that the server still serves everyone (see the class summary).</summary>
    public async Task AssertServedAsync(string attack)
    {
        _server.AssertAlive();

        // Served now, at the attack's end: a few more acknowledgements before the traffic stops.
        var before = _acknowledged.Count;
        await Poll.UntilAsync(() => _acknowledged.Count >= before + 3 || !_failures.IsEmpty, $"{attack}: the sentinel's publishes to be acknowledged", TimeSpan.FromSeconds(60));
        await _stop!.CancelAsync();
        await _traffic!;
        Assert.True(_failures.IsEmpty, $"{attack}: the sentinel's publishes failed: {string.Join("; ", _failures)}");
        Assert.True(Volatile.Read(ref _disconnects) == 0, $"{attack}: the sentinel was disconnected");
        var acknowledged = _acknowledged.ToArray();
        _acknowledged.Clear();
        Assert.True(acknowledged.Length > 0, $"{attack}: the server acknowledged none of the sentinel's publishes");

        // Nothing accepted is lost: every PUBACKed message reaches the back end.
        var missing = acknowledged;
        await Poll.UntilAsync(
            () =>
            {
                var seen = _server.BackEndLines.Select(static l => l[(l.IndexOf(':', StringComparison.Ordinal) + 1)..].TrimEnd('}')).ToHashSet(StringComparer.Ordinal);
                missing = [.. acknowledged.Where(n => !seen.Contains(n.ToString(CultureInfo.InvariantCulture)))];
                return missing.Length == 0;
            },
            $"{attack}: every acknowledged sentinel message at the back end",
            TimeSpan.FromSeconds(30),
            TimeSpan.FromMilliseconds(50),
            () => Task.FromResult($"missing {missing.Length} of {acknowledged.Length}: {string.Join(',', missing.Take(20))}\n{_server.BackEndTranscript[..Math.Min(2000, _server.BackEndTranscript.Length)]}"));

        // STUN over UDP from 127.0.0.1.
        using (var udp = StunTestClient.UdpClient(IPAddress.Loopback))
        {
            var (response, _) = await StunTestClient.ExchangeAsync(udp, StunTestClient.Request(StunTransactionId.NewRandom()), new IPEndPoint(IPAddress.Loopback, _server.StunPort));
            var parsed = StunTestClient.Parse(response);
            Assert.Equal(StunClass.SuccessResponse, parsed.Class);
        }

        using (var health = await _server.Http.GetAsync("/healthz"))
        {
            Assert.True(health.IsSuccessStatusCode, $"{attack}: /healthz answered {(int)health.StatusCode}");
        }

        // A push command to the sentinel reaches its final state.
        var id = await PushTestKit.PushAsync(_server.Http, "sentinel", "ping");
        var state = string.Empty;
        await Poll.UntilAsync(
            async () => (state = (await PushTestKit.GetAsync(_server.Http, id, wait: 10)).GetProperty("state").GetString()!) == "succeeded",
            $"{attack}: the push command to the sentinel to succeed",
            TimeSpan.FromSeconds(60),
            describe: () => Task.FromResult($"state {state}"));
        Assert.True(Volatile.Read(ref _disconnects) == 0, $"{attack}: the sentinel was disconnected");
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop is not null)
        {
            await _stop.CancelAsync();
        }

        if (_traffic is not null)
        {
            await _traffic;
        }

        await _client.DisposeAsync();
        _stop?.Dispose();
    }
}
