using System.Globalization;
using System.Text.RegularExpressions;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>
/// samples/PeerDemo (the documented two-terminal demo) as device d{n} in a lab client namespace, driven
/// through its line contract: it prints <c>CONNECTED</c>, <c>READY</c>, <c>PATH direct|relayed ENDPOINT
/// rtt=..ms</c>, <c>RECV text</c>, <c>SENT text</c>, <c>ERROR</c>, and sends every stdin line to its peer.
/// A <see cref="ToolProcess"/> the lab owns, with stdin kept open (PeerDemo ends on EOF); its lines carry
/// the time they arrived, which is what the bench reads.
/// </summary>
public sealed partial class LabPeer : IAsyncDisposable
{
    private readonly ToolProcess _process;

    private LabPeer(ToolProcess process, string name)
    {
        _process = process;
        Name = name;
        process.Describe = async () => (Other is { } other ? other.OwnTranscript + "\n" : string.Empty) + (Describe is { } describe ? await describe() : string.Empty);
    }

    /// <summary>The build output PeerDemo runs from (Relay.sln builds it).</summary>
    public static string PeerDemoDll => Path.Combine(RepoPaths.Root, "samples", "PeerDemo", "bin", "Release", "net10.0", "PeerDemo.dll");

    /// <summary>A short name for messages, e.g. <c>d1 (Easy)</c>.</summary>
    public string Name { get; }

    public string CommandLine => _process.CommandLine;

    /// <summary>More to say when a wait fails: the lab's counters, the server's metrics.</summary>
    public Func<Task<string>>? Describe { get; set; }

    /// <summary>The other end of the channel, whose transcript failure messages include too.</summary>
    public LabPeer? Other { get; set; }

    /// <summary>Every line so far, with the stderr lines marked, and the other end's: for failure messages.</summary>
    public string Transcript => Other is { } other ? OwnTranscript + "\n" + other.OwnTranscript : OwnTranscript;

    /// <summary>The stdout lines so far, with the time each arrived.</summary>
    public IReadOnlyList<OutputLine> Lines => _process.Lines;

    /// <summary>How many stdout lines so far: a mark for <see cref="WaitForLineAsync"/>'s <c>from</c>, to wait for a line that comes after an event.</summary>
    public int LineCount => _process.LineCount;

    /// <summary>The <c>PATH</c> lines so far, as (path, remote endpoint).</summary>
    public IReadOnlyList<(string Path, string Remote)> Paths =>
        [.. Lines.Select(l => PathPattern().Match(l.Text)).Where(m => m.Success).Select(m => (m.Groups[1].Value, m.Groups[2].Value + ":" + m.Groups[3].Value))];

    private string OwnTranscript => $"--- {Name}\n{_process.Transcript}";

    /// <summary>
    /// Starts PeerDemo for device d{site.Index} behind <paramref name="site"/> against the lab server; the
    /// lab owns the process. <paramref name="options"/> are PeerDemo's own (<c>--connect d2</c>, <c>--no-host</c>, ...).
    /// </summary>
    public static LabPeer Start(NatLab lab, NatSite site, IEnumerable<string> options, TimeSpan? lifetime = null)
    {
        Assert.True(File.Exists(PeerDemoDll), $"{PeerDemoDll} is missing: dotnet build Relay.sln -c Release");
        var device = LabRelayServer.DeviceId(site.Index);
        string[] arguments =
        [
            PeerDemoDll,
            "--server", $"mqtt://{NatLab.ServerAddress}:{LabRelayServer.MqttPort.ToString(CultureInfo.InvariantCulture)}",
            "--device", device, "--secret", LabRelayServer.Secret, .. options,
        ];
        var process = lab.Start(site.ClientNamespace, "dotnet", arguments, lifetime ?? TimeSpan.FromMinutes(5), Path.GetDirectoryName(PeerDemoDll), keepInputOpen: true);
        return new LabPeer(process, $"{device} ({site.Type})");
    }

    /// <summary>Sends one message to the peer: a line on PeerDemo's stdin.</summary>
    public Task SendAsync(string text) => _process.WriteLineAsync(text);

    /// <summary>
    /// Waits for a stdout line matching <paramref name="match"/>, looking only at lines from index <paramref name="from"/>
    /// on (a <see cref="LineCount"/> taken earlier); fails with both transcripts when PeerDemo ends first or the time runs out.
    /// </summary>
    public Task<OutputLine> WaitForLineAsync(Func<string, bool> match, string what, TimeSpan? timeout = null, int from = 0) =>
        _process.WaitForOutputLineAsync(match, $"{Name}, {what}", timeout, from);

    /// <summary>Waits for <c>RECV text</c>.</summary>
    public Task<OutputLine> WaitForReceivedAsync(string text, TimeSpan? timeout = null) =>
        WaitForLineAsync(l => l == "RECV " + text, $"receiving \"{text}\"", timeout);

    /// <summary>Waits for <c>PATH direct ...</c> (from line <paramref name="from"/> on) and returns the line and the remote endpoint it names.</summary>
    public async Task<(OutputLine Line, string Address, int Port)> WaitForDirectAsync(string what, TimeSpan timeout, int from = 0)
    {
        var line = await WaitForLineAsync(l => PathPattern().Match(l) is { Success: true } m && m.Groups[1].Value == "direct", what, timeout, from);
        var match = PathPattern().Match(line.Text);
        return (line, match.Groups[2].Value, int.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture));
    }

    public ValueTask DisposeAsync() => _process.DisposeAsync();

    // PATH direct 198.18.0.12:40000 rtt=0.4ms (samples/PeerDemo ReportPath); "-" when no endpoint is known yet.
    [GeneratedRegex(@"^PATH (direct|relayed) (\d+\.\d+\.\d+\.\d+):(\d+) ")]
    private static partial Regex PathPattern();
}
