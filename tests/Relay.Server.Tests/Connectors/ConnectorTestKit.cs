using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Connectors;

namespace Relay.Server.Tests.Connectors;

/// <summary>The server with one device (<c>d1</c>), mosquitto_pub as that device, and the connectors' counters.</summary>
internal static class ConnectorTestKit
{
    public const string Device = "d1";
    public const string Secret = "d1-connector-secret-5e1b";

    /// <summary>Backoff short enough that a test sees a target come back within a second or two.</summary>
    public static readonly string[] QuickBackoff = ["InitialBackoffMilliseconds=50", "MaxBackoffSeconds=1", "TimeoutSeconds=5"];

    public static Task<RelayTestServer> StartAsync(string connector, params string[] settings) =>
        RelayTestServer.StartAsync(
        [
            $"Relay:Mqtt:Devices:0:Id={Device}",
            $"Relay:Mqtt:Devices:0:Secret={Secret}",
            .. settings.Select(s => $"Relay:Connectors:{connector}:0:{s}"),
        ]);

    /// <summary>
    /// mosquitto_pub as the device: every payload in order over one connection (<c>-l</c>, one line each), at
    /// QoS 1; returns once every PUBACK came, which never waits for a connector.
    /// </summary>
    public static async Task PublishAsync(RelayTestServer server, string topic, IReadOnlyList<string> payloads, int qos = 1)
    {
        string[] arguments =
        [
            "-V", "mqttv311", "-h", "127.0.0.1", "-p", server.MqttPort.ToString(CultureInfo.InvariantCulture),
            "-i", Device, "-u", Device, "-P", Secret, "-t", topic, "-q", qos.ToString(CultureInfo.InvariantCulture), "-l",
        ];
        await using var process = ToolProcess.Start("mosquitto_pub", arguments, TimeSpan.FromMinutes(1), standardInput: string.Join('\n', payloads) + "\n");
        var exit = await process.WaitForExitAsync("mosquitto_pub");
        Assert.True(exit == 0, $"mosquitto_pub exited {exit}\n{process.Transcript}");
    }

    public static ConnectorMetrics Counters(RelayTestServer server) => server.Services.GetRequiredService<ConnectorMetrics>();

    public static string Describe(RelayTestServer server)
    {
        var m = Counters(server);
        return $"delivered={m.Delivered(0)} buffered={m.Buffered(0)} spilled={m.Spilled(0)} spill={m.SpillMessages(0)} retries={m.Retries(0)} up={m.Up(0)} "
            + string.Join(' ', Enum.GetValues<ConnectorDropReason>().Select(r => $"{ConnectorMetrics.ReasonName(r)}={m.Dropped(0, r)}"));
    }

    public static IReadOnlyList<string> Numbered(string prefix, int count) => [.. Enumerable.Range(0, count).Select(i => prefix + i.ToString(CultureInfo.InvariantCulture))];
}
