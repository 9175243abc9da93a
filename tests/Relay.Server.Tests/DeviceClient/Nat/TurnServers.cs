using System.Globalization;
using System.Net;

namespace Relay.Server.Tests.DeviceClientNat;

public enum TurnServerKind
{
    Ours,
    Coturn,
}

/// <summary>
/// A real TURN server for the client tests: ours in-process, or coturn's turnserver as a child process on
/// 127.0.0.1 with its own relay-port window in 40000-44999. Both: user "u" / "p", realm "r", loopback
/// peers allowed, 127.0.0.3 denied.
/// </summary>
internal sealed class TurnServerUnderTest : IAsyncDisposable
{
    public const string User = "u";
    public const string Password = "p";
    public const string Realm = "r";
    public const string SharedSecret = "rest-secret";
    public static readonly IPAddress DeniedPeer = IPAddress.Parse("127.0.0.3");

    private static int s_window = Environment.ProcessId % 50;

    private readonly RelayTestServer? _ours;
    private readonly ToolProcess? _coturn;
    private readonly string? _logFile;

    private TurnServerUnderTest(IPEndPoint endpoint, RelayTestServer? ours, ToolProcess? coturn, string? logFile)
    {
        Endpoint = endpoint;
        _ours = ours;
        _coturn = coturn;
        _logFile = logFile;
    }

    public IPEndPoint Endpoint { get; }

    public RelayTestServer? Ours => _ours;

    public static async Task<TurnServerUnderTest> StartAsync(TurnServerKind kind, bool restSecret = false)
    {
        if (kind == TurnServerKind.Ours)
        {
            var server = await RelayTestServer.StartAsync(
                $"Relay:Turn:Users:0={User}:{Password}",
                $"Relay:Turn:Realm={Realm}",
                restSecret ? $"Relay:Turn:SharedSecrets:0={SharedSecret}" : "Relay:Turn:Enabled=true",
                "Relay:Turn:AllowLoopbackPeers=true",
                $"Relay:Turn:DeniedPeers:0={DeniedPeer}/32");
            return new TurnServerUnderTest(new IPEndPoint(IPAddress.Loopback, server.StunPort), server, null, null);
        }

        var port = FreePorts.UdpAndTcpPair();
        var window = 40000 + (Interlocked.Increment(ref s_window) % 50 * 100);
        var logFile = Path.Combine(Path.GetTempPath(), $"coturn-dcnat-{port}.log");
        var turnserver = ExternalTool.Find("turnserver");
        string[] auth = restSecret
            ? ["--use-auth-secret", $"--static-auth-secret={SharedSecret}"]
            : ["--lt-cred-mech", "--user", $"{User}:{Password}"];
        var coturn = ToolProcess.Start(
            turnserver,
        [
            "-n", .. auth, "--realm", Realm,
            "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture),
            "--allow-loopback-peers", $"--denied-peer-ip={DeniedPeer}",
            "--no-cli", "--no-tls", "--no-dtls",
            "--min-port", window.ToString(CultureInfo.InvariantCulture), "--max-port", (window + 99).ToString(CultureInfo.InvariantCulture),
            "--pidfile", logFile + ".pid", "--log-file", logFile, "--simple-log",
        ],
            TimeSpan.FromMinutes(15));
        var started = new TurnServerUnderTest(new IPEndPoint(IPAddress.Loopback, port), null, coturn, logFile);
        coturn.Describe = started.DescribeAsync;
        try
        {
            await started.WaitForTcpListenerAsync();
        }
        catch
        {
            await started.DisposeAsync();
            throw;
        }

        return started;
    }

    /// <summary>coturn opens its UDP and TCP listeners together; a TCP connect that succeeds says both are up.</summary>
    private Task WaitForTcpListenerAsync() => _coturn!.WaitForListenerAsync(Endpoint, "turnserver", TimeSpan.FromSeconds(20));

    public async Task<string> DescribeAsync()
    {
        var log = _logFile is not null && File.Exists(_logFile) ? await File.ReadAllTextAsync(_logFile) : string.Empty;
        return log.Length > 4000 ? log[^4000..] : log;
    }

    public async ValueTask DisposeAsync()
    {
        if (_ours is not null)
        {
            await _ours.DisposeAsync();
        }

        if (_coturn is not null)
        {
            await _coturn.DisposeAsync();
            foreach (var file in new[] { _logFile!, _logFile + ".pid" })
            {
                File.Delete(file);
            }
        }
    }
}
