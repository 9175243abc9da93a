using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using BlinkDevice;
using Microsoft.Extensions.Logging;
using Relay.DeviceClient;

// A device that blinks its LED when the cloud says so. Settings come from the command line
// (--name value) or from RELAY_* environment variables, so the same binary runs under systemd.
var settings = SampleSettings.Parse(args);
if (settings is null)
{
    Console.Error.WriteLine(SampleSettings.Usage);
    return 2;
}

using var loggerFactory = new ConsoleLoggerFactory(settings.Verbose ? LogLevel.Debug : LogLevel.Information);
var log = loggerFactory.CreateLogger("BlinkDevice");
using var led = Led.Open(settings.Led, log);
var started = Stopwatch.StartNew();

var options = new DeviceClientOptions
{
    Server = settings.Server,
    DeviceId = settings.DeviceId,
    Secret = settings.Secret,
    LoggerFactory = loggerFactory,
};
if (settings.QueueFile is not null)
{
    options.OfflineQueue.FilePath = settings.QueueFile;
}

if (settings.StateFile is not null)
{
    options.Commands.StateFilePath = settings.StateFile;
}

if (settings.AcceptAnyServerCertificate)
{
    // Only for a lab server with a self-signed certificate; a real device validates the chain.
    options.ServerCertificateValidation = static (_, _, _, _) => true;
}

await using var client = new RelayDeviceClient(options);
client.StateChanged += (_, e) =>
{
    if (e.Current == DeviceConnectionState.Connected)
    {
        log.LogInformation("connected to {Server} as {Device} (MQTT {Version})", settings.Server, settings.DeviceId, e.ProtocolVersion == Relay.Protocol.Mqtt.MqttProtocolVersion.V500 ? "5.0" : "3.1.1");
    }
    else if (e.Current == DeviceConnectionState.Disconnected && e.Previous == DeviceConnectionState.Connected)
    {
        log.LogWarning("disconnected: {Reason}; reconnecting", e.Error?.Message ?? "connection closed");
    }
};
client.Error += (_, e) => log.LogWarning("{Error}{Detail}", e.Message, e.Exception is null ? string.Empty : " (" + e.Exception.Message + ")");

client.OnCommand("blink", async (command, cancellationToken) =>
{
    var times = ReadInt(command.Payload, "times", 3, 1, 100);
    var intervalMs = ReadInt(command.Payload, "intervalMs", 200, 10, 5000);
    log.LogInformation("blink x{Times} (command {Id})", times, command.Id);
    for (var i = 0; i < times; i++)
    {
        led.Set(true);
        await Task.Delay(intervalMs / 2, cancellationToken);
        led.Set(false);
        await Task.Delay(intervalMs / 2, cancellationToken);
    }

    return CommandResult.Success(new JsonObject { ["blinked"] = times });
});

client.OnCommand("reboot", (command, _) =>
{
    // Simulated: a sample must not reboot the machine it runs on. A real device would flush its
    // state and call `systemctl reboot` here, after the result has been published.
    log.LogWarning("reboot requested (command {Id}); simulated, not rebooting", command.Id);
    return Task.FromResult(CommandResult.Success(new JsonObject { ["rebooting"] = true, ["simulated"] = true }));
});

client.OnCommand("get-status", (_, _) =>
{
    var statistics = client.Statistics;
    var status = new JsonObject
    {
        ["device"] = settings.DeviceId,
        ["uptimeSeconds"] = (long)started.Elapsed.TotalSeconds,
        ["led"] = led.Description,
        ["ledOn"] = led.IsOn,
        ["mqtt"] = client.ProtocolVersion == Relay.Protocol.Mqtt.MqttProtocolVersion.V500 ? "5.0" : "3.1.1",
        ["reconnects"] = statistics.Reconnects,
        ["commandsExecuted"] = statistics.CommandsExecuted,
        ["queuedMessages"] = statistics.QueuedMessages,
        ["workingSetBytes"] = Environment.WorkingSet,
        ["runtime"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
        ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
    };
    return Task.FromResult(CommandResult.Success(status));
});

using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};
using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});

log.LogInformation("device {Device} starting; LED: {Led}; server {Server}", settings.DeviceId, led.Description, settings.Server);
await client.StartAsync(stop.Token);
try
{
    await client.WaitConnectedAsync(stop.Token);
    if (settings.TelemetryInterval > TimeSpan.Zero)
    {
        using var timer = new PeriodicTimer(settings.TelemetryInterval);
        while (await timer.WaitForNextTickAsync(stop.Token))
        {
            var heartbeat = JsonSerializer.SerializeToUtf8Bytes(new Heartbeat((long)started.Elapsed.TotalSeconds, led.IsOn), SampleJsonContext.Default.Heartbeat);
            await client.PublishTelemetryAsync("heartbeat", heartbeat, stop.Token);
        }
    }
    else
    {
        await Task.Delay(Timeout.Infinite, stop.Token);
    }
}
catch (OperationCanceledException) when (stop.IsCancellationRequested)
{
}

log.LogInformation("stopping");
using var shutdown = new CancellationTokenSource(TimeSpan.FromSeconds(5));
await client.StopAsync(shutdown.Token);
return 0;

static int ReadInt(JsonElement payload, string name, int fallback, int min, int max) =>
    payload.ValueKind == JsonValueKind.Object && payload.TryGetProperty(name, out var value) && value.TryGetInt32(out var number)
        ? Math.Clamp(number, min, max)
        : fallback;

namespace BlinkDevice
{
    internal sealed record Heartbeat(long UptimeSeconds, bool LedOn);

    [System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.CamelCase)]
    [System.Text.Json.Serialization.JsonSerializable(typeof(Heartbeat))]
    internal sealed partial class SampleJsonContext : System.Text.Json.Serialization.JsonSerializerContext;

    internal sealed class SampleSettings
    {
        public const string Usage = """
            usage: BlinkDevice --server mqtt://HOST:1883 --device ID --secret SECRET [options]
              --server URI           mqtt://, mqtts://, ws://HOST:8080/mqtt or wss:// (RELAY_SERVER)
              --device ID            the device id registered on the server (RELAY_DEVICE_ID)
              --secret SECRET        the device secret (RELAY_DEVICE_SECRET)
              --led PATH             an LED or GPIO to drive: /sys/class/leds/NAME, or gpio:N for sysfs
                                     GPIO N (RELAY_LED); without it the sample prints instead
              --queue-file PATH      persist the offline publish queue (RELAY_QUEUE_FILE)
              --state-file PATH      remember answered command ids across restarts (RELAY_STATE_FILE)
              --telemetry SECONDS    publish a heartbeat to devices/ID/telemetry/heartbeat (0: never)
              --insecure             accept any TLS server certificate (lab servers only)
              --verbose              debug logging
            """;

        public required Uri Server { get; init; }

        public required string DeviceId { get; init; }

        public string? Secret { get; init; }

        public string? Led { get; init; }

        public string? QueueFile { get; init; }

        public string? StateFile { get; init; }

        public TimeSpan TelemetryInterval { get; init; }

        public bool AcceptAnyServerCertificate { get; init; }

        public bool Verbose { get; init; }

        public static SampleSettings? Parse(string[] args)
        {
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            var flags = new HashSet<string>(StringComparer.Ordinal);
            for (var i = 0; i < args.Length; i++)
            {
                var arg = args[i];
                if (arg is "--insecure" or "--verbose")
                {
                    flags.Add(arg);
                }
                else if (arg.StartsWith("--", StringComparison.Ordinal) && i + 1 < args.Length)
                {
                    values[arg] = args[++i];
                }
                else
                {
                    Console.Error.WriteLine($"unexpected argument: {arg}");
                    return null;
                }
            }

            string? Get(string option, string environment) =>
                values.TryGetValue(option, out var value) ? value : Environment.GetEnvironmentVariable(environment);

            var server = Get("--server", "RELAY_SERVER") ?? "mqtt://localhost:1883";
            var device = Get("--device", "RELAY_DEVICE_ID");
            if (device is null || !Uri.TryCreate(server, UriKind.Absolute, out var serverUri))
            {
                return null;
            }

            var telemetry = Get("--telemetry", "RELAY_TELEMETRY_SECONDS");
            return new SampleSettings
            {
                Server = serverUri,
                DeviceId = device,
                Secret = Get("--secret", "RELAY_DEVICE_SECRET"),
                Led = Get("--led", "RELAY_LED"),
                QueueFile = Get("--queue-file", "RELAY_QUEUE_FILE"),
                StateFile = Get("--state-file", "RELAY_STATE_FILE"),
                TelemetryInterval = TimeSpan.FromSeconds(telemetry is null ? 0 : double.Parse(telemetry, CultureInfo.InvariantCulture)),
                AcceptAnyServerCertificate = flags.Contains("--insecure"),
                Verbose = flags.Contains("--verbose"),
            };
        }
    }
}
