using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Relay.Server.Tests.Mqtt.Interop;

namespace Relay.Server.Tests.Nat;

/// <summary>One stdout line of a <see cref="LabPeer"/> and when the test process read it.</summary>
/// <param name="Text">The line.</param>
/// <param name="At">Stopwatch timestamp at which the line was read.</param>
public readonly record struct PeerLine(string Text, long At);

/// <summary>
/// samples/PeerDemo (the documented two-terminal demo) as device d{n} in a lab client namespace, driven
/// through its line contract: it prints <c>CONNECTED</c>, <c>READY</c>, <c>PATH direct|relayed ENDPOINT
/// rtt=..ms</c>, <c>RECV text</c>, <c>SENT text</c>, <c>ERROR</c>, and sends every stdin line to its peer.
/// Unlike <see cref="ToolProcess"/> it keeps stdin open (PeerDemo ends on EOF) and timestamps every line,
/// which is what the bench reads. Runs under <c>timeout -s KILL</c>, so it ends even if the test host dies.
/// </summary>
public sealed partial class LabPeer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly List<PeerLine> _stdout = [];
    private readonly List<string> _transcript = [];
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _streamsOpen = 2;
    private bool _disposed;

    private LabPeer(Process process, string name, string commandLine)
    {
        _process = process;
        Name = name;
        CommandLine = commandLine;
    }

    /// <summary>The build output PeerDemo runs from (Relay.sln builds it).</summary>
    public static string PeerDemoDll => Path.Combine(RepoPaths.Root, "samples", "PeerDemo", "bin", "Release", "net10.0", "PeerDemo.dll");

    /// <summary>A short name for messages, e.g. <c>d1 (Easy)</c>.</summary>
    public string Name { get; }

    public string CommandLine { get; }

    /// <summary>More to say when a wait fails: the lab's counters, the server's metrics.</summary>
    public Func<Task<string>>? Describe { get; set; }

    /// <summary>The other end of the channel, whose transcript failure messages include too.</summary>
    public LabPeer? Other { get; set; }

    /// <summary>Every line so far, with the stderr lines marked, and the other end's: for failure messages.</summary>
    public string Transcript => Other is { } other ? OwnTranscript + "\n" + other.OwnTranscript : OwnTranscript;

    private string OwnTranscript
    {
        get
        {
            lock (_gate)
            {
                return $"--- {Name}: {CommandLine}\n" + string.Join('\n', _transcript);
            }
        }
    }

    public IReadOnlyList<PeerLine> Lines
    {
        get
        {
            lock (_gate)
            {
                return [.. _stdout];
            }
        }
    }

    /// <summary>
    /// Starts PeerDemo for device d{site.Index} behind <paramref name="site"/> against the lab server; the
    /// lab owns the process. <paramref name="options"/> are PeerDemo's own (<c>--connect d2</c>, <c>--no-host</c>, ...).
    /// </summary>
    public static LabPeer Start(NatLab lab, NatSite site, IEnumerable<string> options, TimeSpan? lifetime = null)
    {
        Assert.True(File.Exists(PeerDemoDll), $"{PeerDemoDll} is missing: dotnet build Relay.sln -c Release");
        var device = LabRelayServer.DeviceId(site.Index);
        var seconds = ((int)Math.Ceiling((lifetime ?? TimeSpan.FromMinutes(5)).TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        string[] arguments =
        [
            "-s", "KILL", seconds, LabShell.Require("ip"), "netns", "exec", site.ClientNamespace, LabShell.Require("dotnet"), PeerDemoDll,
            "--server", $"mqtt://{NatLab.ServerAddress}:{LabRelayServer.MqttPort.ToString(CultureInfo.InvariantCulture)}",
            "--device", device, "--secret", LabRelayServer.Secret, .. options,
        ];
        var start = new ProcessStartInfo(LabShell.Require("timeout"), arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(PeerDemoDll),
        };
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var peer = new LabPeer(process, $"{device} ({site.Type})", "timeout " + string.Join(' ', arguments));
        process.OutputDataReceived += (_, e) => peer.OnLine(e.Data, stdout: true);
        process.ErrorDataReceived += (_, e) => peer.OnLine(e.Data, stdout: false);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return lab.Own(peer);
    }

    /// <summary>Sends one message to the peer: a line on PeerDemo's stdin.</summary>
    public async Task SendAsync(string text)
    {
        await _process.StandardInput.WriteLineAsync(text);
        await _process.StandardInput.FlushAsync();
    }

    /// <summary>How many stdout lines so far: a mark for <see cref="WaitForLineAsync"/>'s <c>from</c>, to wait for a line that comes after an event.</summary>
    public int LineCount
    {
        get
        {
            lock (_gate)
            {
                return _stdout.Count;
            }
        }
    }

    /// <summary>
    /// Waits for a stdout line matching <paramref name="match"/>, looking only at lines from index <paramref name="from"/>
    /// on (a <see cref="LineCount"/> taken earlier); fails with the transcript when the process ends first or the time runs out.
    /// </summary>
    public async Task<PeerLine> WaitForLineAsync(Func<string, bool> match, string what, TimeSpan? timeout = null, int from = 0)
    {
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        var index = from;
        while (true)
        {
            Task changed;
            bool ended;
            lock (_gate)
            {
                for (; index < _stdout.Count; index++)
                {
                    if (match(_stdout[index].Text))
                    {
                        return _stdout[index];
                    }
                }

                changed = _changed.Task;
                ended = _streamsOpen == 0;
            }

            if (ended)
            {
                Assert.Fail($"{Name}, {what}: PeerDemo ended without it.\n{Transcript}\n{await DescribeAsync()}");
            }

            try
            {
                await changed.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"{Name}, {what}: timed out.\n{Transcript}\n{await DescribeAsync()}");
            }
        }
    }

    /// <summary>Waits for <c>RECV text</c>.</summary>
    public Task<PeerLine> WaitForReceivedAsync(string text, TimeSpan? timeout = null) =>
        WaitForLineAsync(l => l == "RECV " + text, $"receiving \"{text}\"", timeout);

    /// <summary>Waits for <c>PATH direct ...</c> (from line <paramref name="from"/> on) and returns the line and the remote endpoint it names.</summary>
    public async Task<(PeerLine Line, string Address, int Port)> WaitForDirectAsync(string what, TimeSpan timeout, int from = 0)
    {
        var line = await WaitForLineAsync(l => PathPattern().Match(l) is { Success: true } m && m.Groups[1].Value == "direct", what, timeout, from);
        var match = PathPattern().Match(line.Text);
        return (line, match.Groups[2].Value, int.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>The <c>PATH</c> lines so far, as (path, remote endpoint).</summary>
    public IReadOnlyList<(string Path, string Remote)> Paths =>
        [.. Lines.Select(l => PathPattern().Match(l.Text)).Where(m => m.Success).Select(m => (m.Groups[1].Value, m.Groups[2].Value + ":" + m.Groups[3].Value))];

    private async Task<string> DescribeAsync() => Describe is { } describe ? await describe() : string.Empty;

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }

        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            try
            {
                await _process.WaitForExitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }

        _process.Dispose();
    }

    private void OnLine(string? line, bool stdout)
    {
        var at = Stopwatch.GetTimestamp();
        TaskCompletionSource changed;
        lock (_gate)
        {
            if (line is null)
            {
                _streamsOpen--;
            }
            else
            {
                _transcript.Add(stdout ? line : "stderr: " + line);
                if (stdout)
                {
                    _stdout.Add(new PeerLine(line, at));
                }
            }

            changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
    }

    // PATH direct 198.18.0.12:40000 rtt=0.4ms (samples/PeerDemo ReportPath); "-" when no endpoint is known yet.
    [GeneratedRegex(@"^PATH (direct|relayed) (\d+\.\d+\.\d+\.\d+):(\d+) ")]
    private static partial Regex PathPattern();
}
