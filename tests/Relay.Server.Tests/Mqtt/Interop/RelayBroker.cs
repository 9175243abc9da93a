using System.Globalization;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// Our server, out of process (<c>dotnet src/Relay/bin/Release/net10.0/Relay.dll</c>), so SIGKILL is a
/// real crash: nothing in the test host can flush on its behalf. Restart reuses the ports and the data
/// directory.
/// </summary>
public sealed class RelayBroker : MqttBroker, IMqttBrokerStarter<RelayBroker>
{
    private readonly string[] _arguments;
    private readonly int _httpPort;
    private ToolProcess _process;

    private RelayBroker(string workDirectory, TestPki pki, string[] arguments, ToolProcess process, int tcp, int tls, int http)
        : base(workDirectory, pki)
    {
        _arguments = arguments;
        _process = process;
        _httpPort = http;
        TcpPort = tcp;
        TlsPort = tls;
        WebSocketPort = http;
    }

    public override string Name => "Relay";

    public override string Log => _process.Transcript;

    /// <summary>Relay:Http:Port (the push API).</summary>
    public int HttpPort => _httpPort;

    /// <summary>Seconds our server gives a connection to complete CONNECT; short so the slowloris test is quick.</summary>
    public const int ConnectTimeoutSeconds = 3;

    public static Task<RelayBroker> StartAsync() => StartAsync([]);

    /// <summary>Starts with <paramref name="extraArguments"/> (e.g. <c>--Relay:Api:BootstrapToken=x</c>) after the usual ones; kept across restarts.</summary>
    public static async Task<RelayBroker> StartAsync(IReadOnlyList<string> extraArguments)
    {
        Assert.True(File.Exists(RepoPaths.RelayDll), $"{RepoPaths.RelayDll} is missing: dotnet build Relay.sln -c Release");
        var work = Directory.CreateTempSubdirectory("mqtt-relay-").FullName;
        var pki = TestPki.Create(work);
        var data = Directory.CreateDirectory(Path.Combine(work, "data")).FullName;
        int tcp = FreePorts.Tcp(), tls = FreePorts.Tcp(), http = FreePorts.Tcp(), https = FreePorts.Tcp(), stunTls = FreePorts.Tcp();
        var stun = FreePorts.UdpAndTcpPair();
        string P(int port) => port.ToString(CultureInfo.InvariantCulture);
        string[] arguments =
        [
            RepoPaths.RelayDll,
            $"--Relay:DataDirectory={data}",
            $"--Relay:Mqtt:Port={P(tcp)}",
            $"--Relay:Mqtt:TlsPort={P(tls)}",
            "--Relay:Mqtt:ListenAddresses:0=127.0.0.1",
            $"--Relay:Mqtt:ConnectTimeoutSeconds={P(ConnectTimeoutSeconds)}",
            $"--Relay:Http:Port={P(http)}",
            $"--Relay:Http:TlsPort={P(https)}",
            "--Relay:Http:ListenAddresses:0=127.0.0.1",
            $"--Relay:Stun:Port={P(stun)}",
            "--Relay:Stun:ListenAddresses:0=127.0.0.1",
            $"--Relay:Stun:TlsPort={P(stunTls)}",
            "--Relay:Turn:RelayPortMin=61000",
            "--Relay:Turn:RelayPortMax=65535",
            $"--Relay:Tls:CertificatePath={pki.CertificatePath}",
            $"--Relay:Tls:KeyPath={pki.KeyPath}",
            "--Relay:Mqtt:Devices:0:Id=d1",
            $"--Relay:Mqtt:Devices:0:Secret={Secret("d1")}",
            "--Relay:Mqtt:Devices:1:Id=d2",
            $"--Relay:Mqtt:Devices:1:Secret={Secret("d2")}",
            "--Relay:Mqtt:ServiceAccounts:0:Name=svc",
            $"--Relay:Mqtt:ServiceAccounts:0:Password={Secret("svc")}",
            "--Relay:Mqtt:ServiceAccounts:0:Grants:0=devices/#",
            .. extraArguments,
        ];
        var process = await LaunchAsync(arguments, tcp, tls, http);
        return new RelayBroker(work, pki, arguments, process, tcp, tls, http);
    }

    // Our contract (MqttContracts.cs, MqttAuthOutcome.BadCredentials): 0x04 / 0x86.
    public override int BadPasswordCode(MqttVersion version) => version == MqttVersion.V5 ? 0x86 : 0x04;

    public override int DeniedSubscriptionCode(MqttVersion version, int requestedQos) => version == MqttVersion.V5 ? 0x87 : 0x80;

    public override async Task KillAsync()
    {
        _process.Kill();
        await _process.WaitForExitAsync("our server after SIGKILL");
    }

    public override async Task RestartAsync()
    {
        await _process.DisposeAsync();
        _process = await LaunchAsync(_arguments, TcpPort, TlsPort, _httpPort);
    }

    public override async ValueTask DisposeAsync()
    {
        await _process.DisposeAsync();
        DeleteQuietly(WorkDirectory);
    }

    private static async Task<ToolProcess> LaunchAsync(string[] arguments, int tcp, int tls, int http)
    {
        // The content root is the working directory: run from the build output so appsettings.json loads.
        var process = ToolProcess.Start("dotnet", arguments, TimeSpan.FromMinutes(15), Path.GetDirectoryName(RepoPaths.RelayDll));
        try
        {
            await WaitForListenerAsync(tcp, process, "our server (MQTT)");
            await WaitForListenerAsync(tls, process, "our server (MQTT over TLS)");
            await WaitForListenerAsync(http, process, "our server (HTTP, MQTT over WebSocket)");
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }

        return process;
    }
}
