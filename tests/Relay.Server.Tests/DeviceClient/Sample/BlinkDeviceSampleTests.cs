using System.Globalization;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;
using Xunit;

namespace Relay.Server.Tests.DeviceClient.Sample;

/// <summary>
/// The README walkthrough as a test: the real sample executable (samples/BlinkDevice) connects to the
/// server as a device, and commands pushed through the HTTP API run its handlers, with the results
/// visible through the API.
/// </summary>
public sealed class BlinkDeviceSampleTests
{
    private static string SampleDll => Path.Combine(RepoPaths.Root, "samples", "BlinkDevice", "bin", "Release", "net10.0", "BlinkDevice.dll");

    [Fact]
    public Task Blink_pushed_through_the_api_drives_the_led_and_the_result_is_visible_through_the_api() =>
        BlinkEndToEndAsync(trimmed: false);

    [TrimmedSampleFact]
    public Task The_trimmed_self_contained_sample_runs_the_same_walkthrough() => BlinkEndToEndAsync(trimmed: true);

    private static async Task BlinkEndToEndAsync(bool trimmed)
    {
        await using var kit = await PushTestKit.StartAsync();
        var led = FakeSysfsLed();
        await using var device = StartSample(kit, "d1", trimmed, "--led", led);
        await device.WaitForLineAsync(static l => l.Contains("connected to", StringComparison.Ordinal), "the sample to connect", TimeSpan.FromSeconds(60));

        var id = await PushTestKit.PushAsync(kit.Http, "d1", "blink", "{\"times\":2,\"intervalMs\":20}");
        var command = await PushTestKit.GetAsync(kit.Http, id, wait: 30);

        Assert.Equal("succeeded", command.GetProperty("state").GetString());
        Assert.Equal(2, command.GetProperty("result").GetProperty("blinked").GetInt32());
        Assert.Equal(["queued", "delivered", "succeeded"], command.GetProperty("transitions").EnumerateArray().Select(static t => t.GetProperty("state").GetString()!));
        // The handler took the LED from its kernel trigger and left it off after the last blink.
        Assert.Equal("none", File.ReadAllText(Path.Combine(led, "trigger")));
        Assert.Equal("0", File.ReadAllText(Path.Combine(led, "brightness")));
        Assert.Contains(device.StdoutLines, static l => l.Contains("blink x2", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Get_status_and_simulated_reboot_report_results_and_unknown_commands_fail()
    {
        await using var kit = await PushTestKit.StartAsync();
        await using var device = StartSample(kit, "d2", trimmed: false);
        await device.WaitForLineAsync(static l => l.Contains("connected to", StringComparison.Ordinal), "the sample to connect", TimeSpan.FromSeconds(60));

        var status = await PushTestKit.GetAsync(kit.Http, await PushTestKit.PushAsync(kit.Http, "d2", "get-status", "null"), wait: 30);
        Assert.Equal("succeeded", status.GetProperty("state").GetString());
        Assert.Equal("d2", status.GetProperty("result").GetProperty("device").GetString());
        Assert.Equal("5.0", status.GetProperty("result").GetProperty("mqtt").GetString());
        Assert.False(status.GetProperty("result").GetProperty("ledOn").GetBoolean());

        var reboot = await PushTestKit.GetAsync(kit.Http, await PushTestKit.PushAsync(kit.Http, "d2", "reboot", "null"), wait: 30);
        Assert.Equal("succeeded", reboot.GetProperty("state").GetString());
        Assert.True(reboot.GetProperty("result").GetProperty("simulated").GetBoolean());
        Assert.False(device.HasExited);

        var unknown = await PushTestKit.GetAsync(kit.Http, await PushTestKit.PushAsync(kit.Http, "d2", "self-destruct", "null"), wait: 30);
        Assert.Equal("failed", unknown.GetProperty("state").GetString());
    }

    private static ToolProcess StartSample(PushTestKit kit, string device, bool trimmed, params string[] extra)
    {
        string[] arguments = ["--server", "mqtt://127.0.0.1:" + kit.Server.MqttPort.ToString(CultureInfo.InvariantCulture), "--device", device, "--secret", PushTestKit.Secret, .. extra];
        return trimmed
            ? ToolProcess.Start(TrimmedSampleFactAttribute.Executable!, arguments, TimeSpan.FromMinutes(2))
            : ToolProcess.Start("dotnet", [SampleDll, .. arguments], TimeSpan.FromMinutes(2));
    }

    // The files of /sys/class/leds/NAME that the sample touches, in a temp directory.
    private static string FakeSysfsLed()
    {
        var directory = Directory.CreateTempSubdirectory("relay-led-").FullName;
        File.WriteAllText(Path.Combine(directory, "trigger"), "none [mmc0] heartbeat");
        File.WriteAllText(Path.Combine(directory, "max_brightness"), "255\n");
        File.WriteAllText(Path.Combine(directory, "brightness"), "0");
        return directory;
    }
}

/// <summary>
/// Runs when test.sh has published the trimmed, self-contained sample and named it in
/// RELAY_TRIMMED_SAMPLE (CI always does); a plain <c>dotnet test</c> has no such binary to run.
/// </summary>
internal sealed class TrimmedSampleFactAttribute : FactAttribute
{
    public TrimmedSampleFactAttribute()
    {
        if (Executable is null)
        {
            // Named but missing is not skipped: starting it fails the test, as a broken publish should.
            Skip = "RELAY_TRIMMED_SAMPLE is not set: run ./test.sh, which publishes samples/BlinkDevice trimmed first.";
        }
    }

    public static string? Executable => Environment.GetEnvironmentVariable("RELAY_TRIMMED_SAMPLE") is { Length: > 0 } path ? path : null;
}
