using System.Globalization;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Our server as a process (<c>dotnet src/Relay/bin/Release/net10.0/Relay.dll</c>) on a given data directory
/// and free ports, for what only a process shows: its exit code, its stderr, its banner on stdout.
/// </summary>
internal static class RelayServerProcess
{
    /// <summary>Starts the server; <paramref name="extra"/> settings (<c>--Relay:...</c>) come last.</summary>
    public static ToolProcess Start(string dataDirectory, params string[] extra)
    {
        Assert.True(File.Exists(RepoPaths.RelayDll), $"{RepoPaths.RelayDll} is missing: dotnet build Relay.sln -c Release");
        string P(int port) => port.ToString(CultureInfo.InvariantCulture);
        string[] arguments =
        [
            RepoPaths.RelayDll,
            $"--Relay:DataDirectory={dataDirectory}",
            $"--Relay:Stun:Port={P(FreePorts.UdpAndTcpPair())}",
            "--Relay:Stun:ListenAddresses:0=127.0.0.1",
            $"--Relay:Stun:TlsPort={P(FreePorts.Tcp())}",
            $"--Relay:Mqtt:Port={P(FreePorts.Tcp())}",
            $"--Relay:Mqtt:TlsPort={P(FreePorts.Tcp())}",
            "--Relay:Mqtt:ListenAddresses:0=127.0.0.1",
            $"--Relay:Http:Port={P(FreePorts.Tcp())}",
            "--Relay:Http:ListenAddresses:0=127.0.0.1",
            "--Relay:Turn:RelayPortMin=61000",
            "--Relay:Turn:RelayPortMax=65535",
            .. extra,
        ];

        // The content root is the working directory: run from the build output so appsettings.json loads.
        return ToolProcess.Start("dotnet", arguments, TimeSpan.FromMinutes(5), Path.GetDirectoryName(RepoPaths.RelayDll));
    }

    /// <summary>Waits for the banner's last line ("  Data ..."): every listener is up and the banner is complete.</summary>
    public static Task WaitForBannerAsync(ToolProcess process) =>
        process.WaitForLineAsync(static l => l.StartsWith("  Data ", StringComparison.Ordinal), "the startup banner", TimeSpan.FromSeconds(60));
}
