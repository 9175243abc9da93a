using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Relay.DeviceClient;
using Relay.DeviceClient.Peers;

// PeerDemo: two terminals, two devices, one peer channel. Every stdin line is sent to the peer; every
// message from the peer is printed. Output lines have stable prefixes (or are JSON with --json) so scripts
// and the NAT lab can wait on them: CONNECTED, READY, PATH, CHECKS, RECV, SENT, ERROR.
const string Usage = """
    PeerDemo --server mqtt://HOST:1883 --device ID --secret S [--connect PEER] [--no-host] [--no-birthday]
             [--relay-only] [--direct-only] [--keepalive SECONDS] [--check-timeout SECONDS]
             [--recheck SECONDS] [--allow-loopback] [--json]
      --connect PEER   introduce this device to PEER (otherwise wait for a peer to connect)
      --no-host        offer no host candidates (lab tests: only NATed addresses)
      --no-birthday    no birthday-paradox probing
      --relay-only     never leave the TURN relay; --direct-only: never use it
      --keepalive S    keepalive interval of the direct path (default 25)
      --check-timeout S  how long connectivity checks run (default 10)
      --recheck S      while relayed after the checks ended, re-run them this often (default 30, 0 = off)
      --allow-loopback accept the peer's loopback candidates (both peers on one machine)
      --json           one JSON object per line instead of text
    """;

string? server = null, device = null, secret = null, connect = null;
bool noHost = false, noBirthday = false, relayOnly = false, directOnly = false, allowLoopback = false, json = false;
double keepalive = 25, checkTimeout = 10, recheck = 30;
for (var i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
    try
    {
        switch (args[i])
        {
            case "--server": server = Next(); break;
            case "--device": device = Next(); break;
            case "--secret": secret = Next(); break;
            case "--connect": connect = Next(); break;
            case "--no-host": noHost = true; break;
            case "--no-birthday": noBirthday = true; break;
            case "--relay-only": relayOnly = true; break;
            case "--direct-only": directOnly = true; break;
            case "--keepalive": keepalive = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--check-timeout": checkTimeout = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--recheck": recheck = double.Parse(Next(), CultureInfo.InvariantCulture); break;
            case "--allow-loopback": allowLoopback = true; break;
            case "--json": json = true; break;
            default: throw new ArgumentException($"Unknown option {args[i]}.");
        }
    }
    catch (Exception e) when (e is ArgumentException or FormatException)
    {
        Console.Error.WriteLine(e.Message);
        Console.Error.WriteLine(Usage);
        return 2;
    }
}

if (server is null || device is null || !Uri.TryCreate(server, UriKind.Absolute, out var serverUri))
{
    Console.Error.WriteLine(Usage);
    return 2;
}

var output = new Output(json);
using var stop = new CancellationTokenSource();
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};

var options = new DeviceClientOptions { Server = serverUri, DeviceId = device, Secret = secret };
options.Peers.UseHost = !noHost;
options.Peers.BirthdayProbing = !noBirthday;
options.Peers.AllowLoopbackCandidates = allowLoopback;
options.Peers.KeepaliveInterval = TimeSpan.FromSeconds(keepalive);
options.Peers.CheckTimeout = TimeSpan.FromSeconds(checkTimeout);
options.Peers.RecheckInterval = TimeSpan.FromSeconds(recheck);
options.Peers.PathPolicy = relayOnly ? PeerPathPolicy.RelayOnly : directOnly ? PeerPathPolicy.DirectOnly : PeerPathPolicy.Auto;

await using var client = new RelayDeviceClient(options);
var incoming = new TaskCompletionSource<PeerChannel>(TaskCreationOptions.RunContinuationsAsynchronously);
client.PeerConnected += (_, e) =>
{
    if (!incoming.TrySetResult(e.Channel))
    {
        _ = e.Channel.DisposeAsync().AsTask(); // this demo talks to one peer at a time
    }
};
client.Error += (_, e) => output.Line("ERROR", e.Message, ("message", e.Message));

try
{
    await client.StartAsync(stop.Token);
    await client.WaitConnectedAsync(stop.Token);
    output.Line("CONNECTED", device, ("device", device));

    var channel = connect is not null
        ? await client.ConnectPeerAsync(connect, stop.Token)
        : await incoming.Task.WaitAsync(stop.Token);
    await using (channel)
    {
        channel.PathChanged += (_, _) => ReportPath(channel);
        channel.ChecksEnded += (_, _) => output.Line("CHECKS", $"ended {Name(channel.Path)}", ("checks", "ended"), ("path", Name(channel.Path)));
        output.Line("READY", $"{channel.PeerId} {Name(channel.Path)}", ("peer", channel.PeerId), ("path", Name(channel.Path)));
        ReportPath(channel);

        var receive = ReceiveAsync(channel, stop.Token);
        var send = SendStdinAsync(channel, stop.Token);
        await Task.WhenAny(receive, send);
        await stop.CancelAsync();
        await Task.WhenAll(receive, send).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    return 0;
}
catch (OperationCanceledException) when (stop.IsCancellationRequested)
{
    return 0;
}
catch (Exception e) when (e is PeerConnectException or TimeoutException or OperationCanceledException or InvalidOperationException)
{
    output.Line("ERROR", e.Message, ("message", e.Message), ("code", (e as PeerConnectException)?.Code ?? e.GetType().Name));
    return 1;
}

void ReportPath(PeerChannel channel)
{
    var rtt = channel.RoundTripTime is { } r ? r.TotalMilliseconds.ToString("0.0", CultureInfo.InvariantCulture) : "?";
    var remote = channel.RemoteEndPoint?.ToString() ?? "-";
    // dropped: datagrams refused as unauthentic, replayed, stale or from an unvalidated address (PeerChannel.FramesDropped).
    var dropped = channel.FramesDropped.ToString(CultureInfo.InvariantCulture);
    output.Line("PATH", $"{Name(channel.Path)} {remote} rtt={rtt}ms dropped={dropped}", ("path", Name(channel.Path)), ("remote", remote), ("rttMs", rtt), ("dropped", dropped));
}

async Task ReceiveAsync(PeerChannel channel, CancellationToken cancellationToken)
{
    try
    {
        await foreach (var message in channel.ReadAllAsync(cancellationToken))
        {
            var text = Encoding.UTF8.GetString(message.Span);
            output.Line("RECV", text, ("text", text));
        }
    }
    catch (OperationCanceledException)
    {
    }
}

async Task SendStdinAsync(PeerChannel channel, CancellationToken cancellationToken)
{
    using var stdin = new StreamReader(Console.OpenStandardInput(), Encoding.UTF8);
    while (!cancellationToken.IsCancellationRequested)
    {
        var line = await stdin.ReadLineAsync(cancellationToken);
        if (line is null)
        {
            return; // EOF ends the demo
        }

        try
        {
            await channel.SendAsync(Encoding.UTF8.GetBytes(line), cancellationToken);
            output.Line("SENT", line, ("text", line));
        }
        catch (TimeoutException e)
        {
            output.Line("ERROR", e.Message, ("message", e.Message));
        }
    }
}

static string Name(PeerPath path) => path == PeerPath.Direct ? "direct" : "relayed";

/// <summary>One line per event, text or JSON (written with Utf8JsonWriter: no reflection, trimming-safe).</summary>
internal sealed class Output(bool json)
{
    private readonly object _gate = new();

    public void Line(string prefix, string text, params (string Name, string Value)[] fields)
    {
        string line;
        if (json)
        {
            using var buffer = new MemoryStream();
            using (var writer = new Utf8JsonWriter(buffer))
            {
                writer.WriteStartObject();
                writer.WriteString("event", prefix.ToLowerInvariant());
                foreach (var (name, value) in fields)
                {
                    writer.WriteString(name, value);
                }

                writer.WriteEndObject();
            }

            line = Encoding.UTF8.GetString(buffer.ToArray());
        }
        else
        {
            line = $"{prefix} {text}";
        }

        lock (_gate)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }
}
