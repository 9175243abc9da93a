using System.Globalization;
using System.Text.Json;

namespace Relay.Server.Tests.Mqtt.Interop;

public sealed record ReceivedMessage(string Topic, string Payload, int Qos, bool Retain);

/// <summary>What a client connects as and how.</summary>
public sealed record ClientOptions(string User, string ClientId, MqttVersion Version, string Transport = "tcp", string? Password = null, bool CleanStart = true, int SessionExpirySeconds = 0);

/// <summary>Drives scripts/mqtt_client.py (Eclipse paho 1.6.1 under Debian's /usr/bin/python3).</summary>
internal static class Paho
{
    private const string Python = "/usr/bin/python3";

    public static ToolProcess Start(MqttBroker broker, ClientOptions client, string mode, params string[] extra)
    {
        Assert.True(File.Exists(Python), "/usr/bin/python3 is missing (apt-get install python3-paho-mqtt)");
        List<string> arguments =
        [
            "-u", RepoPaths.PahoScript, mode,
            "--port", broker.Port(client.Transport).ToString(CultureInfo.InvariantCulture),
            "--version", client.Version == MqttVersion.V5 ? "5" : "311",
            "--transport", client.Transport,
            "--client-id", client.ClientId,
            "--username", client.User,
            "--password", client.Password ?? MqttBroker.Secret(client.User),
            "--clean", client.CleanStart ? "1" : "0",
            "--timeout", "30",
        ];
        if (client.Transport == "tls")
        {
            arguments.AddRange(["--ca", broker.CaPath]);
        }

        if (client.Transport == "ws")
        {
            arguments.AddRange(["--ws-path", broker.WebSocketPath]);
        }

        if (client.SessionExpirySeconds > 0)
        {
            arguments.AddRange(["--session-expiry", client.SessionExpirySeconds.ToString(CultureInfo.InvariantCulture)]);
        }

        arguments.AddRange(extra);
        return ToolProcess.Start(Python, arguments, TimeSpan.FromMinutes(2));
    }

    /// <summary>Runs a client to its end and fails unless it exits 0.</summary>
    public static async Task<ToolProcess> RunAsync(MqttBroker broker, ClientOptions client, string mode, params string[] extra)
    {
        var process = Start(broker, client, mode, extra);
        var exit = await process.WaitForExitAsync($"paho {mode}");
        Assert.True(exit == 0, $"paho {mode} exited {exit}.\n{process.Transcript}\n--- broker:\n{Tail(broker.Log)}");
        return process;
    }

    /// <summary>Publishes each payload in order to <paramref name="topic"/> and waits for every QoS flow to complete.</summary>
    public static async Task PublishAsync(MqttBroker broker, ClientOptions client, string topic, int qos, IEnumerable<string> payloads, bool retain = false)
    {
        string[] arguments = ["--topic", topic, "--qos", qos.ToString(CultureInfo.InvariantCulture), "--retain", retain ? "1" : "0", .. payloads.SelectMany(static p => new[] { "--payload", p })];
        await using var process = await RunAsync(broker, client, "pub", arguments);
        Assert.Contains("DONE", process.StdoutLines);
    }

    /// <summary>Starts a subscriber that exits after <paramref name="count"/> messages; returns once it printed READY.</summary>
    public static async Task<ToolProcess> SubscribeAsync(MqttBroker broker, ClientOptions client, int qos, int count, params string[] filters)
    {
        string[] arguments = ["--qos", qos.ToString(CultureInfo.InvariantCulture), "--count", count.ToString(CultureInfo.InvariantCulture), .. filters.SelectMany(static f => new[] { "--topic", f })];
        var process = Start(broker, client, "sub", arguments);
        await process.WaitForLineAsync(static l => l == "READY", "paho subscriber READY");
        return process;
    }

    public static int[] SubAcks(ToolProcess process) =>
        [.. process.StdoutLines.Where(static l => l.StartsWith("SUBACK ", StringComparison.Ordinal))
            .SelectMany(static l => l["SUBACK ".Length..].Split(','))
            .Select(static c => int.Parse(c, CultureInfo.InvariantCulture))];

    public static int ConnAck(ToolProcess process) =>
        int.Parse(process.StdoutLines.Single(static l => l.StartsWith("CONNACK ", StringComparison.Ordinal))["CONNACK ".Length..], CultureInfo.InvariantCulture);

    public static ReceivedMessage[] Messages(ToolProcess process) =>
        [.. process.StdoutLines.Where(static l => l.StartsWith("MSG ", StringComparison.Ordinal)).Select(static l =>
        {
            using var json = JsonDocument.Parse(l["MSG ".Length..]);
            var root = json.RootElement;
            return new ReceivedMessage(root.GetProperty("topic").GetString()!, root.GetProperty("payload").GetString()!, root.GetProperty("qos").GetInt32(), root.GetProperty("retain").GetInt32() != 0);
        })];

    public static string Tail(string text) => text.Length <= 4000 ? text : text[^4000..];
}

/// <summary>Drives mosquitto_pub / mosquitto_sub (Debian mosquitto-clients).</summary>
internal static class MosquittoCli
{
    private static List<string> Common(MqttBroker broker, ClientOptions client)
    {
        List<string> arguments =
        [
            "-V", client.Version == MqttVersion.V5 ? "mqttv5" : "mqttv311",
            "-h", MqttBroker.Host,
            "-p", broker.Port(client.Transport).ToString(CultureInfo.InvariantCulture),
            "-i", client.ClientId,
            "-u", client.User,
            "-P", client.Password ?? MqttBroker.Secret(client.User),
        ];
        if (client.Transport == "tls")
        {
            arguments.AddRange(["--cafile", broker.CaPath]);
        }

        return arguments;
    }

    /// <summary>
    /// Publishes <paramref name="payloads"/> in order. Several payloads go over one connection (mosquitto_pub -l,
    /// one line each): MQTT orders messages per connection only (§4.6), so one process per message could be
    /// read by the broker in any order, and each would take over the previous one's session.
    /// </summary>
    public static async Task PublishAsync(MqttBroker broker, ClientOptions client, string topic, int qos, IEnumerable<string?> payloads, bool retain = false)
    {
        var all = payloads.ToList();
        var arguments = Common(broker, client);
        arguments.AddRange(["-t", topic, "-q", qos.ToString(CultureInfo.InvariantCulture)]);
        string? lines = null;
        if (all is [var single])
        {
            // A null payload is mosquitto_pub -n: a zero-length message (clears a retained one).
            arguments.AddRange(single is null ? ["-n"] : ["-m", single]);
        }
        else
        {
            Assert.DoesNotContain(null, all);
            Assert.All(all, static p => Assert.False(string.IsNullOrEmpty(p) || p.Contains('\n', StringComparison.Ordinal), "one non-empty line per message"));
            arguments.Add("-l");
            lines = string.Join('\n', all) + "\n";
        }

        if (retain)
        {
            arguments.Add("-r");
        }

        await using var process = ToolProcess.Start("mosquitto_pub", arguments, TimeSpan.FromMinutes(1), standardInput: lines);
        var exit = await process.WaitForExitAsync("mosquitto_pub");
        Assert.True(exit == 0, $"mosquitto_pub exited {exit}.\n{process.Transcript}\n--- broker:\n{Paho.Tail(broker.Log)}");
    }

    /// <summary>
    /// Starts mosquitto_sub (-C count, -W as a backstop) with -d so its SUBACK is visible, and returns once
    /// the SUBACK arrived. Messages print as "MSG retain qos topic payload".
    /// </summary>
    public static async Task<ToolProcess> SubscribeAsync(MqttBroker broker, ClientOptions client, int qos, int count, string[] filters, params string[] extra)
    {
        var arguments = Common(broker, client);
        arguments.AddRange(["-d", "-q", qos.ToString(CultureInfo.InvariantCulture), "-C", count.ToString(CultureInfo.InvariantCulture), "-W", "30", "-F", "MSG %r %q %t %p"]);
        foreach (var filter in filters)
        {
            arguments.AddRange(["-t", filter]);
        }

        arguments.AddRange(extra);
        // mosquitto_sub's stdout is block-buffered into a pipe; line buffering lets the test see SUBACK.
        var process = ToolProcess.Start("stdbuf", ["-oL", ExternalTool.Find("mosquitto_sub"), .. arguments], TimeSpan.FromMinutes(1));
        await process.WaitForLineAsync(static l => l.StartsWith("Subscribed (mid:", StringComparison.Ordinal), "mosquitto_sub SUBACK");
        return process;
    }

    /// <summary>The codes of "Subscribed (mid: 1): 0, 128".</summary>
    public static int[] SubAcks(ToolProcess process) =>
        [.. process.StdoutLines.Single(static l => l.StartsWith("Subscribed (mid:", StringComparison.Ordinal)).Split("):")[1]
            .Split(',', StringSplitOptions.TrimEntries).Select(static c => int.Parse(c, CultureInfo.InvariantCulture))];

    public static ReceivedMessage[] Messages(ToolProcess process) =>
        [.. process.StdoutLines.Where(static l => l.StartsWith("MSG ", StringComparison.Ordinal)).Select(static l =>
        {
            var parts = l.Split(' ', 5);
            return new ReceivedMessage(parts[3], parts.Length > 4 ? parts[4] : "", int.Parse(parts[2], CultureInfo.InvariantCulture), parts[1] == "1");
        })];
}
