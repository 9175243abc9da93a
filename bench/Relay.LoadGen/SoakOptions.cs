using System.Globalization;
using System.Net;

namespace Relay.LoadGen;

/// <summary>Options of the <c>soak</c> command (flags as --name value).</summary>
internal sealed class SoakOptions
{
    public const string Usage = """
        soak        --server HOST:MQTTPORT --api http://HOST:PORT --token T --devices-file PATH
                    --backend-user U --backend-password P [--turn HOST:PORT --turn-user U --turn-password P]
                    [--devices 5000] [--minutes 30] [--server-pid PID] [--csv PATH] [--sample-seconds 30]
                    [--warmup-minutes 5] [--sources 40] [--telemetry-interval 30] [--mean-online 600]
                    [--max-offline 20] [--command-rate 10] [--rendezvous-rate 2] [--turn-allocations 200]
                    [--drain-seconds 180] [--id-prefix sk-] [--self-check N]
            Mixed load on one server for --minutes (issue 14 §6). Registers --devices devices (generated
            secrets, as push does) and runs at once: devices with persistent sessions (MQTT 3.1.1, clean
            session 0) that subscribe to their commands and rendezvous/in, answer every command, publish
            QoS 1 telemetry every --telemetry-interval s (jittered) to devices/{id}/telemetry, stay online
            for an exponential time (mean --mean-online s), then drop (DISCONNECT or a bare close) and come
            back after 1..--max-offline s; a back-end subscriber (service account) on devices/+/telemetry;
            --command-rate POST /v1/devices/{id}/commands per second to random devices, each followed with
            GET ?wait= to its final state; --rendezvous-rate introductions per second between online
            devices; --turn-allocations TURN allocations (UDP) with a permission, a channel and 1 relayed
            echo a second each, refreshed every 60 s and released after 1..5 minutes, then made again.
            The server's VmRSS, open descriptors and threads go to --csv every --sample-seconds. Then a
            drain (no more churn or new work, every device back) of at most --drain-seconds, and the
            verdict: every telemetry message the server PUBACKed reached the subscriber, every command
            answered 202 succeeded, RSS and descriptors after the warm-up within 5%. Exit 1 otherwise.
            --self-check N proves the accounting can fail: the subscriber PUBACKs but forgets every Nth
            telemetry message and the devices leave every Nth command unanswered, so the run must report
            both as lost and exit 1.
        """;

    public required IPEndPoint Mqtt { get; init; }

    public required Uri Api { get; init; }

    public required string Token { get; init; }

    public required string DevicesFile { get; init; }

    public required string BackendUser { get; init; }

    public required string BackendPassword { get; init; }

    public IPEndPoint? Turn { get; init; }

    public string TurnUser { get; init; } = "soak";

    public string TurnPassword { get; init; } = "soakpw";

    public int Devices { get; init; } = 5000;

    public double Minutes { get; init; } = 30;

    public int ServerPid { get; init; }

    public string? Csv { get; init; }

    public double SampleSeconds { get; init; } = 30;

    public double WarmupMinutes { get; init; } = 5;

    public int Sources { get; init; } = 40;

    public double TelemetryIntervalSeconds { get; init; } = 30;

    public double MeanOnlineSeconds { get; init; } = 600;

    public double MaxOfflineSeconds { get; init; } = 20;

    public double CommandRate { get; init; } = 10;

    public double RendezvousRate { get; init; } = 2;

    public int TurnAllocations { get; init; } = 200;

    public double DrainSeconds { get; init; } = 180;

    public string IdPrefix { get; init; } = "sk-";

    public int ProvisionConcurrency { get; init; } = 8;

    /// <summary>0: a real run. N: every Nth telemetry message and command is dropped by the generator itself, so the run must fail.</summary>
    public int SelfCheck { get; init; }

    public static bool TryParse(string[] args, int start, out SoakOptions? options, out string? error)
    {
        options = null;
        error = null;
        if (!OptionValues.TryCollect(args, start, new HashSet<string>(), out var values, out _, out error))
        {
            return false;
        }

        if (!values.TryGetValue("--server", out var server) || !IPEndPoint.TryParse(server, out var mqtt))
        {
            error = "--server HOST:MQTTPORT is required";
            return false;
        }

        if (!values.TryGetValue("--api", out var api) || !Uri.TryCreate(api, UriKind.Absolute, out var apiUri))
        {
            error = "--api http://HOST:PORT is required";
            return false;
        }

        if (!values.TryGetValue("--token", out var token) || !values.TryGetValue("--devices-file", out var devicesFile))
        {
            error = "--token and --devices-file are required";
            return false;
        }

        if (!values.TryGetValue("--backend-user", out var backendUser) || !values.TryGetValue("--backend-password", out var backendPassword))
        {
            error = "--backend-user and --backend-password (a service account with the grant devices/#) are required";
            return false;
        }

        IPEndPoint? turn = null;
        if (values.TryGetValue("--turn", out var turnText) && !IPEndPoint.TryParse(turnText, out turn))
        {
            error = "--turn must be HOST:PORT";
            return false;
        }

        try
        {
            int I(string name, int fallback) => values.TryGetValue(name, out var v) ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
            double D(string name, double fallback) => values.TryGetValue(name, out var v) ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
            options = new SoakOptions
            {
                Mqtt = mqtt,
                Api = apiUri,
                Token = token,
                DevicesFile = devicesFile,
                BackendUser = backendUser,
                BackendPassword = backendPassword,
                Turn = turn,
                TurnUser = values.GetValueOrDefault("--turn-user", "soak"),
                TurnPassword = values.GetValueOrDefault("--turn-password", "soakpw"),
                Devices = Math.Clamp(I("--devices", 5000), 2, 99_999),
                Minutes = Math.Max(0.5, D("--minutes", 30)),
                ServerPid = I("--server-pid", 0),
                Csv = values.GetValueOrDefault("--csv"),
                SampleSeconds = Math.Max(1, D("--sample-seconds", 30)),
                WarmupMinutes = Math.Max(0, D("--warmup-minutes", 5)),
                Sources = Math.Clamp(I("--sources", 40), 1, 250),
                TelemetryIntervalSeconds = Math.Max(1, D("--telemetry-interval", 30)),
                MeanOnlineSeconds = Math.Max(5, D("--mean-online", 600)),
                MaxOfflineSeconds = Math.Max(1, D("--max-offline", 20)),
                CommandRate = Math.Max(0, D("--command-rate", 10)),
                RendezvousRate = Math.Max(0, D("--rendezvous-rate", 2)),
                TurnAllocations = turn is null ? 0 : Math.Max(0, I("--turn-allocations", 200)),
                DrainSeconds = Math.Max(10, D("--drain-seconds", 180)),
                IdPrefix = values.GetValueOrDefault("--id-prefix", "sk-"),
                ProvisionConcurrency = Math.Max(1, I("--provision-concurrency", 8)),
                SelfCheck = Math.Max(0, I("--self-check", 0)),
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
