using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// Our server as a process (<c>dotnet src/Relay/bin/Release/net10.0/Relay.dll</c>) inside the lab's server
/// namespace, listening on <see cref="NatLab.ServerAddress"/> only (STUN also on the alternate address for
/// RFC 5780), with devices d1..dN provisioned. The ports are the defaults: the namespace has its own.
/// TURN (RFC 8656) runs on the STUN ports, UDP and TCP, with a REST shared secret (the server mints
/// device credentials from it over MQTT) and relay addresses on <see cref="NatLab.ServerAddress"/>;
/// rendezvous introduces any two devices (<c>Relay:Rendezvous:Policy=Any</c>, docs/rendezvous.md).
/// </summary>
internal sealed class LabRelayServer : IAsyncDisposable
{
    public const string Token = "natlab-admin-token-0123456789";
    public const string Secret = "natlab-device-secret";
    public const int MqttPort = 1883;
    public const int HttpPort = 8080;
    public const int StunPort = 3478;
    public const string TurnSharedSecret = "natlab-turn-rest-secret";

    private readonly string _work;

    private LabRelayServer(string work, ToolProcess process)
    {
        _work = work;
        Process = process;
        Http = new HttpClient { BaseAddress = new Uri($"http://{NatLab.ServerAddress}:{HttpPort.ToString(CultureInfo.InvariantCulture)}"), Timeout = TimeSpan.FromSeconds(90) };
        Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
    }

    public ToolProcess Process { get; }

    /// <summary>The push API, reached from the test process through the lab's root veth.</summary>
    public HttpClient Http { get; }

    public static async Task<LabRelayServer> StartAsync(NatLab lab, int devices)
    {
        Assert.True(File.Exists(RepoPaths.RelayDll), $"{RepoPaths.RelayDll} is missing: dotnet build Relay.sln -c Release");
        var work = Directory.CreateTempSubdirectory("natlab-relay-").FullName;
        var data = Directory.CreateDirectory(Path.Combine(work, "data")).FullName;
        string P(int port) => port.ToString(CultureInfo.InvariantCulture);
        List<string> arguments =
        [
            RepoPaths.RelayDll,
            $"--Relay:DataDirectory={data}",
            $"--Relay:Api:BootstrapToken={Token}",
            $"--Relay:Mqtt:Port={P(MqttPort)}",
            $"--Relay:Mqtt:ListenAddresses:0={NatLab.ServerAddress}",
            "--Relay:Mqtt:AllowAnonymous=false",
            $"--Relay:Http:Port={P(HttpPort)}",
            $"--Relay:Http:ListenAddresses:0={NatLab.ServerAddress}",
            $"--Relay:Stun:Port={P(StunPort)}",
            $"--Relay:Stun:ListenAddresses:0={NatLab.ServerAddress}",
            $"--Relay:Stun:AlternateAddress={NatLab.ServerAlternateAddress}",
            "--Relay:Turn:Enabled=true",
            $"--Relay:Turn:SharedSecrets:0={TurnSharedSecret}",

            // The lab's public segment is not on the default deny list; saying so keeps the lab working if it ever is.
            $"--Relay:Turn:AllowedPeers:0={NatLab.PublicNetwork}",
            "--Relay:Rendezvous:Enabled=true",
            "--Relay:Rendezvous:Policy=Any",
        ];
        for (var i = 0; i < devices; i++)
        {
            arguments.Add($"--Relay:Mqtt:Devices:{P(i)}:Id={DeviceId(i + 1)}");
            arguments.Add($"--Relay:Mqtt:Devices:{P(i)}:Secret={Secret}");
        }

        // The content root is the working directory: run from the build output so appsettings.json loads.
        var process = lab.Start(lab.ServerNamespace, "dotnet", arguments, TimeSpan.FromMinutes(10), Path.GetDirectoryName(RepoPaths.RelayDll));
        var server = new LabRelayServer(work, process);
        try
        {
            await WaitForListenerAsync(MqttPort, process, "MQTT");
            await WaitForListenerAsync(HttpPort, process, "HTTP");
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }

        return server;
    }

    public static string DeviceId(int index) => "d" + index.ToString(CultureInfo.InvariantCulture);

    /// <summary>nat_device.py for device d{site.Index} in the site's client namespace; returns once it has subscribed.</summary>
    public static async Task<ToolProcess> StartDeviceAsync(NatLab lab, NatSite site, int keepAliveSeconds)
    {
        var device = lab.Start(site.ClientNamespace, "/usr/bin/python3",
        [
            Path.Combine(LabScripts.Directory, "nat_device.py"),
            "--host", NatLab.ServerAddress, "--port", MqttPort.ToString(CultureInfo.InvariantCulture),
            "--id", DeviceId(site.Index), "--secret", Secret, "--keepalive", keepAliveSeconds.ToString(CultureInfo.InvariantCulture),
        ]);
        await device.WaitForLineAsync(l => l == "READY", $"device {DeviceId(site.Index)} behind the {site.Type} NAT subscribing");
        return device;
    }

    /// <summary>
    /// The sum of the samples of one <c>/metrics</c> family whose labels contain every string in
    /// <paramref name="labels"/> (e.g. <c>path="relayed"</c>); 0 when there is none yet.
    /// </summary>
    public async Task<double> MetricAsync(string family, params string[] labels)
    {
        var text = await Http.GetStringAsync("/metrics");
        double sum = 0;
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith('#') || !line.StartsWith(family, StringComparison.Ordinal))
            {
                continue;
            }

            var rest = line[family.Length..];
            var labelText = rest.StartsWith('{') ? rest[..(rest.IndexOf('}', StringComparison.Ordinal) + 1)] : string.Empty;
            if ((rest.Length > 0 && rest[0] != '{' && rest[0] != ' ') || !labels.All(l => labelText.Contains(l, StringComparison.Ordinal)))
            {
                continue;
            }

            sum += double.Parse(rest[(labelText.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
        }

        return sum;
    }

    /// <summary>The rendezvous and TURN relay lines of <c>/metrics</c>, for failure messages.</summary>
    public async Task<string> DescribeRendezvousAsync()
    {
        try
        {
            var text = await Http.GetStringAsync("/metrics");
            return string.Join('\n', text.Split('\n').Where(l => !l.StartsWith('#') && (l.StartsWith("relay_rendezvous_", StringComparison.Ordinal) || l.StartsWith("relay_turn_relayed_", StringComparison.Ordinal) || l.StartsWith("relay_turn_drops_", StringComparison.Ordinal)) && !l.EndsWith(" 0", StringComparison.Ordinal))) + "\n";
        }
        catch (HttpRequestException e)
        {
            return "(no /metrics: " + e.Message + ")\n";
        }
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Process.DisposeAsync();
        try
        {
            Directory.Delete(_work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static Task WaitForListenerAsync(int port, ToolProcess process, string what) =>
        process.WaitForListenerAsync(new IPEndPoint(IPAddress.Parse(NatLab.ServerAddress), port), $"our server's {what} listener");
}
