using System.Globalization;
using System.Net;

namespace Relay.LoadGen;

/// <summary>Options of the <c>push</c> command (flags as --name value).</summary>
internal sealed class PushLoadOptions
{
    public const string Usage = """
        push        --mqtt HOST:PORT --http http://HOST:PORT --token T --devices-file PATH [--devices 10000]
                    [--sources 40] [--provision-concurrency 4] [--connect-concurrency 32] [--http-connections 16]
                    [--rate 1000] [--latency-duration 10] [--concurrency 64] [--warmup 2] [--duration 10]
                    [--backend-user U --backend-password P] [--sample 500] [--server-pid PID] [--label NAME]
            Push API load (issue 5 §6). Registers --devices devices through POST /v1/devices unless
            --devices-file already lists them (id secret per line; written on first use), connects them
            (MQTT 3.1.1, id/secret, SUBSCRIBE devices/{id}/commands QoS 1) from 127.0.0.2..127.0.0.(1+sources),
            then: open loop of --rate POST /v1/devices/{id}/commands per second for --latency-duration s,
            round-robin over the devices (API-call-to-device latency p50/p99); closed loop of --concurrency
            commands in flight for --duration s (commands per second whose result the server PUBACKed, a
            sample of --sample checked by GET /v1/commands/{id}). With --backend-user, the same two phases
            as plain MQTT QoS 1 PUBLISHes from one back-end connection (the reference).
            With --restart-storm S instead: once connected it prints "STORM READY" and waits for the server
            to go away (the caller kills and restarts it), then every device reconnects as a real fleet
            would (a random first delay of 0..S seconds, then 1 s +-50% between attempts) while /healthz is
            polled every 100 ms: the time until every device is back, and the health answers meanwhile.
        """;

    public required IPEndPoint Mqtt { get; init; }

    public required Uri Http { get; init; }

    public required string Token { get; init; }

    public required string DevicesFile { get; init; }

    public string Label { get; init; } = "";

    public int Devices { get; init; } = 10_000;

    public int Sources { get; init; } = 40;

    public int ProvisionConcurrency { get; init; } = 4;

    public int ConnectConcurrency { get; init; } = 32;

    public int HttpConnections { get; init; } = 16;

    public double Rate { get; init; } = 1000;

    public double LatencySeconds { get; init; } = 10;

    public int Concurrency { get; init; } = 64;

    public double WarmupSeconds { get; init; } = 2;

    public double DurationSeconds { get; init; } = 10;

    public string? BackendUser { get; init; }

    public string? BackendPassword { get; init; }

    public int Sample { get; init; } = 500;

    public int ServerPid { get; init; }

    public string IdPrefix { get; init; } = "pd-";

    /// <summary>0: the latency and throughput phases. Above 0: the restart storm, devices spreading their first reconnect over this many seconds.</summary>
    public double RestartStormSpreadSeconds { get; init; }

    public static bool TryParse(string[] args, int start, out PushLoadOptions? options, out string? error)
    {
        options = null;
        error = null;
        if (!OptionValues.TryCollect(args, start, new HashSet<string>(), out var values, out _, out error))
        {
            return false;
        }

        if (!values.TryGetValue("--mqtt", out var mqtt) || !IPEndPoint.TryParse(mqtt, out var mqttEndPoint))
        {
            error = "--mqtt HOST:PORT is required";
            return false;
        }

        if (!values.TryGetValue("--http", out var http) || !Uri.TryCreate(http, UriKind.Absolute, out var httpUri))
        {
            error = "--http http://HOST:PORT is required";
            return false;
        }

        if (!values.TryGetValue("--token", out var token) || !values.TryGetValue("--devices-file", out var devicesFile))
        {
            error = "--token and --devices-file are required";
            return false;
        }

        try
        {
            int I(string name, int fallback) => values.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
            double D(string name, double fallback) => values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
            options = new PushLoadOptions
            {
                Mqtt = mqttEndPoint,
                Http = httpUri,
                Token = token,
                DevicesFile = devicesFile,
                Label = values.GetValueOrDefault("--label", ""),
                Devices = Math.Max(1, I("--devices", 10_000)),
                Sources = Math.Clamp(I("--sources", 40), 1, 250),
                ProvisionConcurrency = Math.Max(1, I("--provision-concurrency", 4)),
                ConnectConcurrency = Math.Max(1, I("--connect-concurrency", 32)),
                HttpConnections = Math.Max(1, I("--http-connections", 16)),
                Rate = D("--rate", 1000),
                LatencySeconds = D("--latency-duration", 10),
                Concurrency = Math.Max(1, I("--concurrency", 64)),
                WarmupSeconds = D("--warmup", 2),
                DurationSeconds = D("--duration", 10),
                BackendUser = values.GetValueOrDefault("--backend-user"),
                BackendPassword = values.GetValueOrDefault("--backend-password"),
                Sample = Math.Max(0, I("--sample", 500)),
                ServerPid = I("--server-pid", 0),
                IdPrefix = values.GetValueOrDefault("--id-prefix", "pd-"),
                RestartStormSpreadSeconds = D("--restart-storm", 0),
            };
            return true;
        }
        catch (FormatException e)
        {
            error = e.Message;
            return false;
        }
    }
}
