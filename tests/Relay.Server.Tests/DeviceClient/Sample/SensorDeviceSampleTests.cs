using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;
using Xunit;

namespace Relay.Server.Tests.DeviceClient.Sample;

/// <summary>
/// samples/SensorDevice, the real executable: it reports readings, and desired state set over the API while it
/// runs changes its interval and LED, which it reports back until the delta is empty.
/// </summary>
public sealed class SensorDeviceSampleTests
{
    private static string SampleDll => Path.Combine(RepoPaths.Root, "samples", "SensorDevice", "bin", "Release", "net10.0", "SensorDevice.dll");

    [Fact]
    public async Task DesiredIntervalAndLed_AreAppliedAndReportedBack()
    {
        await using var kit = await PushTestKit.StartAsync();
        string[] arguments = ["--server", "mqtt://127.0.0.1:" + kit.Server.MqttPort.ToString(CultureInfo.InvariantCulture), "--device", "d1", "--secret", PushTestKit.Secret, "--interval", "30"];
        await using var device = ToolProcess.Start("dotnet", [SampleDll, .. arguments], TimeSpan.FromMinutes(2));
        await device.WaitForLineAsync(static l => l.StartsWith("reading ", StringComparison.Ordinal), "the first reading", TimeSpan.FromSeconds(60));

        using (var request = new HttpRequestMessage(HttpMethod.Patch, "/v1/devices/d1/twin/desired") { Content = new StringContent("""{"interval":1,"led":"on"}""", Encoding.UTF8, "application/json") })
        using (var response = await kit.Http.SendAsync(request))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        await device.WaitForLineAsync(static l => l == "led on", "the LED to switch on");
        await device.WaitForLineAsync(static l => l.Contains("(every 1 s)", StringComparison.Ordinal), "a reading at the new interval");
        await Poll.UntilAsync(
            async () =>
            {
                using var document = JsonDocument.Parse(await kit.Http.GetStringAsync("/v1/devices/d1/twin"));
                var twin = document.RootElement;
                return twin.GetProperty("delta").GetRawText() == "{}" && twin.GetProperty("reported").GetProperty("led").GetString() == "on"
                    && twin.GetProperty("reported").GetProperty("interval").GetInt32() == 1;
            },
            "the sample's report to empty the delta",
            describe: () => Task.FromResult(device.Transcript));
    }
}
