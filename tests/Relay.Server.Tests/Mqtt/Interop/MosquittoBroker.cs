using System.Globalization;
using System.Text;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// Eclipse Mosquitto (Debian's mosquitto 2.0) as the reference broker: the suite passes against it
/// first, which shows the tests themselves are right. TCP, TLS (test CA) and WebSocket listeners on free
/// loopback ports, persistence in a temp dir, a password file and an ACL file with our policy.
/// </summary>
public sealed class MosquittoBroker : MqttBroker, IMqttBrokerStarter<MosquittoBroker>
{
    private const string Program = "/usr/sbin/mosquitto";
    private readonly string _configPath;
    private ToolProcess _process;

    private MosquittoBroker(string workDirectory, TestPki pki, string configPath, ToolProcess process, int tcp, int tls, int ws)
        : base(workDirectory, pki)
    {
        _configPath = configPath;
        _process = process;
        TcpPort = tcp;
        TlsPort = tls;
        WebSocketPort = ws;
    }

    public override string Name => "Mosquitto";

    public override string Log => _process.Transcript;

    public static async Task<MosquittoBroker> StartAsync()
    {
        Assert.True(File.Exists(Program), "mosquitto is not installed (apt-get install mosquitto mosquitto-clients python3-paho-mqtt)");
        var work = Directory.CreateTempSubdirectory("mqtt-mosquitto-").FullName;
        var pki = TestPki.Create(work);
        var passwords = Path.Combine(work, "passwd");
        foreach (var (user, secret) in Users)
        {
            // -c creates the file on the first user; later users are added to it.
            string[] create = File.Exists(passwords) ? [] : ["-c"];
            var result = await ExternalTool.RunAsync("mosquitto_passwd", [.. create, "-b", passwords, user, secret]);
            Assert.True(result.ExitCode == 0, "mosquitto_passwd failed: " + result.Output);
        }

        var acl = Path.Combine(work, "acl");
        File.WriteAllText(acl, """
            # The same policy as Relay's: a device is confined to its own subtree, the service account
            # reaches every device.
            user d1
            topic readwrite devices/d1/#
            user d2
            topic readwrite devices/d2/#
            user svc
            topic readwrite devices/#

            """);
        var data = Directory.CreateDirectory(Path.Combine(work, "data")).FullName;
        int tcp = FreePorts.Tcp(), tls = FreePorts.Tcp(), ws = FreePorts.Tcp();
        var config = new StringBuilder()
            .AppendLine("per_listener_settings false")
            .AppendLine("allow_anonymous false")
            .AppendLine(CultureInfo.InvariantCulture, $"password_file {passwords}")
            .AppendLine(CultureInfo.InvariantCulture, $"acl_file {acl}")
            .AppendLine("persistence true")
            .AppendLine(CultureInfo.InvariantCulture, $"persistence_location {data}/")
            // Our MaxPacketSize default, so an oversized remaining length is refused by both brokers.
            .AppendLine("max_packet_size 262144")
            // The tests run as root; without this mosquitto switches to the mosquitto user and cannot
            // read the 0700 temp directory.
            .AppendLine("user root")
            .AppendLine("log_dest stdout")
            .AppendLine("log_type all")
            .AppendLine(CultureInfo.InvariantCulture, $"listener {tcp} {Host}")
            .AppendLine(CultureInfo.InvariantCulture, $"listener {tls} {Host}")
            .AppendLine(CultureInfo.InvariantCulture, $"cafile {pki.CaPath}")
            .AppendLine(CultureInfo.InvariantCulture, $"certfile {pki.CertificatePath}")
            .AppendLine(CultureInfo.InvariantCulture, $"keyfile {pki.KeyPath}")
            .AppendLine(CultureInfo.InvariantCulture, $"listener {ws} {Host}")
            .AppendLine("protocol websockets")
            .ToString();
        var configPath = Path.Combine(work, "mosquitto.conf");
        File.WriteAllText(configPath, config);
        var process = await LaunchAsync(configPath, tcp, tls, ws);
        return new MosquittoBroker(work, pki, configPath, process, tcp, tls, ws);
    }

    public override int BadPasswordCode(MqttVersion version) => version == MqttVersion.V5 ? 0x87 : 0x05;

    // Mosquitto 2.0 grants a subscription its ACL denies and filters at delivery instead (measured on
    // 2.0.11); the delivery assertions still apply to it.
    public override int DeniedSubscriptionCode(MqttVersion version, int requestedQos) => requestedQos;

    public override async Task KillAsync()
    {
        _process.Kill();
        await _process.WaitForExitAsync("mosquitto after SIGKILL");
    }

    public override async Task RestartAsync()
    {
        await _process.DisposeAsync();
        _process = await LaunchAsync(_configPath, TcpPort, TlsPort, WebSocketPort);
    }

    public override async ValueTask DisposeAsync()
    {
        await _process.DisposeAsync();
        DeleteQuietly(WorkDirectory);
    }

    private static async Task<ToolProcess> LaunchAsync(string configPath, int tcp, int tls, int ws)
    {
        var process = ToolProcess.Start(Program, ["-c", configPath], TimeSpan.FromMinutes(15));
        try
        {
            await WaitForListenerAsync(tcp, process, "mosquitto");
            await WaitForListenerAsync(tls, process, "mosquitto");
            await WaitForListenerAsync(ws, process, "mosquitto");
        }
        catch
        {
            await process.DisposeAsync();
            throw;
        }

        return process;
    }
}
