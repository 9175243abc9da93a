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
        BlinkEndToEndAsync(executable: null);

    [PublishedSampleFact(PublishedSampleFactAttribute.Trimmed)]
    public Task The_trimmed_self_contained_sample_runs_the_same_walkthrough() =>
        BlinkEndToEndAsync(PublishedSampleFactAttribute.Executable(PublishedSampleFactAttribute.Trimmed));

    [PublishedSampleFact(PublishedSampleFactAttribute.NativeAot)]
    public Task The_native_aot_sample_runs_the_same_walkthrough() =>
        BlinkEndToEndAsync(PublishedSampleFactAttribute.Executable(PublishedSampleFactAttribute.NativeAot));

    // executable: a published BlinkDevice binary, or null for the framework-dependent build run by `dotnet`.
    private static async Task BlinkEndToEndAsync(string? executable)
    {
        await using var kit = await PushTestKit.StartAsync();
        var led = FakeSysfsLed();
        await using var device = StartSample(kit, "d1", executable, "--led", led);
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
        await using var device = StartSample(kit, "d2", executable: null);
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

    private static ToolProcess StartSample(PushTestKit kit, string device, string? executable, params string[] extra)
    {
        string[] arguments = ["--server", "mqtt://127.0.0.1:" + kit.Server.MqttPort.ToString(CultureInfo.InvariantCulture), "--device", device, "--secret", PushTestKit.Secret, .. extra];
        return executable is not null
            ? ToolProcess.Start(executable, arguments, TimeSpan.FromMinutes(2))
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
/// Runs when test.sh has published the sample (trimmed self-contained, or Native AOT) and named the
/// binary in RELAY_TRIMMED_SAMPLE / RELAY_NATIVE_SAMPLE (CI always does); a plain <c>dotnet test</c> has
/// no such binary to run. Named but missing is not skipped: starting it fails the test, as a broken
/// publish should.
/// </summary>
internal sealed class PublishedSampleFactAttribute : FactAttribute
{
    public const string Trimmed = "RELAY_TRIMMED_SAMPLE";
    public const string NativeAot = "RELAY_NATIVE_SAMPLE";

    public PublishedSampleFactAttribute(string variable)
    {
        if (Environment.GetEnvironmentVariable(variable) is not { Length: > 0 })
        {
            Skip = $"{variable} is not set: run ./test.sh, which publishes samples/BlinkDevice first.";
        }
    }

    public static string Executable(string variable) => Environment.GetEnvironmentVariable(variable)!;
}
