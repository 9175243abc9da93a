using System.Globalization;
using System.Net;

namespace Relay.LoadGen;

/// <summary>Options of the <c>mqtt-idle</c> and <c>mqtt-pubsub</c> commands (flags as --name value).</summary>
internal sealed class MqttLoadOptions
{
    public const string Usage = """
        mqtt-idle   --target HOST:PORT [--connections 10000] [--processes 2] [--sources 8] [--server-pid PID]
                    [--keepalive 600] [--concurrency 256] [--label NAME]
            Opens N idle MQTT 3.1.1 connections (CONNECT, CONNACK, then silence) from 127.0.0.2..127.0.0.(1+sources),
            spread over --processes generator processes, and reports the server's VmRSS growth per connection.
        mqtt-pubsub --target HOST:PORT [--publishers 4] [--qos 0|1] [--payload 64] [--window 64] [--warmup 1]
                    [--duration 3] [--rate 10000] [--latency-duration 3] [--server-pid PID] [--label NAME]
                    [--username U --password P]
            Publisher i publishes to bench/i, subscriber i subscribes to bench/i. Closed loop: at most --window
            messages per pair published and not yet delivered; delivered messages/s. Open loop: --rate messages/s
            in total; publish-to-delivery latency p50/p99.
        """;

    public required IPEndPoint Target { get; init; }

    public string Label { get; init; } = "";

    public int Connections { get; init; } = 10_000;

    public int Processes { get; init; } = 2;

    public int Sources { get; init; } = 8;

    public int SourceOffset { get; init; }

    public int ServerPid { get; init; }

    public int KeepAlive { get; init; } = 600;

    public int Concurrency { get; init; } = 256;

    public bool Worker { get; init; }

    public int WorkerIndex { get; init; }

    public int Publishers { get; init; } = 4;

    public int Qos { get; init; }

    public int Payload { get; init; } = 64;

    public int Window { get; init; } = 64;

    public double WarmupSeconds { get; init; } = 1;

    public double DurationSeconds { get; init; } = 3;

    public double Rate { get; init; } = 10_000;

    public double LatencySeconds { get; init; } = 3;

    public string? Username { get; init; }

    public string? Password { get; init; }

    public static bool TryParse(string[] args, int start, out MqttLoadOptions? options, out string? error)
    {
        options = null;
        error = null;
        if (!OptionValues.TryCollect(args, start, new HashSet<string> { "--worker" }, out var values, out var flags, out error))
        {
            return false;
        }

        if (!values.TryGetValue("--target", out var target) || !IPEndPoint.TryParse(target, out var endPoint))
        {
            error = "--target HOST:PORT is required";
            return false;
        }

        try
        {
            int I(string name, int fallback) => values.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
            double D(string name, double fallback) => values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
            options = new MqttLoadOptions
            {
                Target = endPoint,
                Label = values.GetValueOrDefault("--label", ""),
                Connections = I("--connections", 10_000),
                Processes = Math.Max(1, I("--processes", 2)),
                Sources = Math.Clamp(I("--sources", 8), 1, 250),
                SourceOffset = I("--source-offset", 0),
                ServerPid = I("--server-pid", 0),
                KeepAlive = I("--keepalive", 600),
                Concurrency = Math.Max(1, I("--concurrency", 256)),
                Worker = flags.Contains("--worker"),
                WorkerIndex = I("--worker-index", 0),
                Publishers = Math.Max(1, I("--publishers", 4)),
                Qos = Math.Clamp(I("--qos", 0), 0, 1),
                Payload = Math.Max(16, I("--payload", 64)),
                Window = Math.Max(1, I("--window", 64)),
                WarmupSeconds = D("--warmup", 1),
                DurationSeconds = D("--duration", 3),
                Rate = D("--rate", 10_000),
                LatencySeconds = D("--latency-duration", 3),
                Username = values.GetValueOrDefault("--username"),
                Password = values.GetValueOrDefault("--password"),
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
