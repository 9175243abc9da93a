using System.Globalization;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>Starts the lab's python helpers (NatLab/scripts) inside lab namespaces.</summary>
internal static class LabScripts
{
    public static string Directory => Path.Combine(RepoPaths.Root, "tests", "Relay.Server.Tests", "NatLab", "scripts");

    /// <summary>udp_reporter.py in the server namespace, on both server addresses and both ports; returns once it listens.</summary>
    public static async Task<ToolProcess> StartReporterAsync(NatLab lab, int port, int otherPort)
    {
        var reporter = lab.Start(lab.ServerNamespace, "/usr/bin/python3",
        [
            Path.Combine(Directory, "udp_reporter.py"),
            "--address", NatLab.ServerAddress, "--address", NatLab.ServerAlternateAddress,
            "--port", port.ToString(CultureInfo.InvariantCulture), "--port", otherPort.ToString(CultureInfo.InvariantCulture),
        ]);
        await reporter.WaitForLineAsync(l => l == "LISTENING", "udp_reporter.py");
        return reporter;
    }

    /// <summary>Runs udp_probe.py in the site's client namespace; fails on a crash, not on a verdict.</summary>
    public static async Task<LabResult> ProbeAsync(NatLab lab, NatSite site, string mode, IEnumerable<string> destinations)
    {
        var result = await lab.RunAsync(site.ClientNamespace, "/usr/bin/python3",
            [Path.Combine(Directory, "udp_probe.py"), mode, .. destinations.SelectMany(d => new[] { "--to", d })], TimeSpan.FromSeconds(60));
        Assert.True(result.Succeeded, result.ToString());
        return result;
    }

    /// <summary>The external address:port the reporter saw for <paramref name="destination"/>, or null when none answered.</summary>
    public static string? Mapped(LabResult probe, string destination) =>
        probe.Stdout.Split('\n').Select(l => l.Trim().Split(' ')).FirstOrDefault(w => w.Length == 3 && w[0] == "MAPPED" && w[1] == destination)?[2];
}
