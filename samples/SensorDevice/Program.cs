using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Relay.DeviceClient;

// A sensor device: publishes a temperature reading every `interval` seconds and follows its desired state
// (docs/data.md, "Device state"): {"interval": 5} changes how often it reports, {"led": "on"|"off"} switches
// a simulated LED. It applies what it can and reports the state it now has, which empties the delta.
// Settings: --server URI --device ID --secret SECRET [--interval SECONDS], or RELAY_SERVER, RELAY_DEVICE_ID,
// RELAY_DEVICE_SECRET.
var settings = Settings.Parse(args);
if (settings is null)
{
    Console.Error.WriteLine("usage: SensorDevice --server mqtt://HOST:1883 --device ID --secret SECRET [--interval SECONDS]");
    return 2;
}

var interval = settings.Interval;
var led = "off";
var changed = new SemaphoreSlim(0, 1);
var options = new DeviceClientOptions { Server = settings.Server, DeviceId = settings.DeviceId, Secret = settings.Secret };
await using var client = new RelayDeviceClient(options);
client.Error += (_, e) => Console.WriteLine($"error: {e.Message}");
client.StateChanged += (_, e) => Console.WriteLine($"state: {e.Current}");

// Registered before StartAsync, so the first connection subscribes the delta topic.
client.OnDesiredState(async (delta, cancellationToken) =>
{
    Console.WriteLine($"desired v{delta.Version}: {delta.State.GetRawText()}");
    if (delta.State.TryGetProperty("interval", out var wanted) && wanted.TryGetInt32(out var seconds) && seconds is >= 1 and <= 3600)
    {
        interval = seconds;
        if (changed.CurrentCount == 0)
        {
            changed.Release();
        }
    }

    if (delta.State.TryGetProperty("led", out var state) && state.GetString() is "on" or "off")
    {
        // A real device drives a GPIO here (see samples/BlinkDevice/Led.cs).
        led = state.GetString()!;
        Console.WriteLine($"led {led}");
    }

    // What holds now: a value the device refused stays in the delta, for the back end to see.
    await client.ReportStateAsync(Json(w =>
    {
        w.WriteNumber("interval", interval);
        w.WriteString("led", led);
    }), cancellationToken);
});

using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};

await client.StartAsync(stop.Token);
try
{
    await client.WaitConnectedAsync(stop.Token);
    Console.WriteLine($"connected as {settings.DeviceId}");
    await client.ReportStateAsync(Json(w =>
    {
        w.WriteNumber("interval", interval);
        w.WriteString("led", led);
    }), stop.Token);

    var random = new Random();
    var temperature = 21.0;
    while (!stop.IsCancellationRequested)
    {
        temperature = Math.Round(temperature + ((random.NextDouble() - 0.5) * 0.4), 2);
        var reading = Json(w => w.WriteNumber("temperature", temperature));
        await client.PublishTelemetryAsync("temperature", reading, stop.Token);
        Console.WriteLine($"reading {temperature.ToString(CultureInfo.InvariantCulture)} (every {interval} s)");

        // Sleeps the interval, or less when the desired interval changes.
        await changed.WaitAsync(TimeSpan.FromSeconds(interval), stop.Token);
    }
}
catch (OperationCanceledException) when (stop.IsCancellationRequested)
{
}

using var shutdown = new CancellationTokenSource(TimeSpan.FromSeconds(5));
await client.StopAsync(shutdown.Token);
return 0;

// UTF-8 JSON without reflection: the library and this sample stay trimmable and Native-AOT-safe.
static byte[] Json(Action<Utf8JsonWriter> members)
{
    var buffer = new ArrayBufferWriter<byte>(64);
    using (var writer = new Utf8JsonWriter(buffer))
    {
        writer.WriteStartObject();
        members(writer);
        writer.WriteEndObject();
    }

    return buffer.WrittenSpan.ToArray();
}

internal sealed record Settings(Uri Server, string DeviceId, string? Secret, int Interval)
{
    public static Settings? Parse(string[] args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            values[args[i]] = args[i + 1];
        }

        string? Get(string flag, string variable) => values.TryGetValue(flag, out var value) ? value : Environment.GetEnvironmentVariable(variable);
        var server = Get("--server", "RELAY_SERVER");
        var device = Get("--device", "RELAY_DEVICE_ID");
        if (server is null || device is null || !Uri.TryCreate(server, UriKind.Absolute, out var uri))
        {
            return null;
        }

        var interval = int.TryParse(Get("--interval", "RELAY_INTERVAL"), NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) && seconds is >= 1 and <= 3600 ? seconds : 10;
        return new Settings(uri, device, Get("--secret", "RELAY_DEVICE_SECRET"), interval);
    }
}
