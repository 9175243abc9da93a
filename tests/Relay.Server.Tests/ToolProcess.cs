using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.Server.Tests;

/// <summary>One line a <see cref="ToolProcess"/> wrote to stdout, and when the test process read it.</summary>
/// <param name="Text">The line.</param>
/// <param name="At">Stopwatch timestamp at which the line was read.</param>
public readonly record struct OutputLine(string Text, long At);

/// <summary>
/// The one runner of external processes whose output a test follows: brokers, MQTT clients, coturn's tools,
/// the samples, processes inside the NAT lab. Stdout lines are kept with the time they arrived, and a test
/// waits for a matching line (an event, not a sleep); stdin is closed at once, or kept open for
/// <see cref="WriteLineAsync"/> when the process reads commands from it. Every process runs under coreutils
/// <c>timeout -s KILL</c>, so it ends even if the test host dies; dispose kills the whole tree.
/// </summary>
public sealed class ToolProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly List<OutputLine> _stdout = [];
    private readonly List<string> _transcript = [];
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _streamsOpen = 2;
    private bool _disposed;

    private ToolProcess(Process process, string commandLine)
    {
        _process = process;
        CommandLine = commandLine;
    }

    public string CommandLine { get; }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    /// <summary>More to say when a wait fails (a peer's transcript, the server's metrics).</summary>
    public Func<Task<string>>? Describe { get; set; }

    public IReadOnlyList<string> StdoutLines
    {
        get
        {
            lock (_gate)
            {
                return [.. _stdout.Select(static l => l.Text)];
            }
        }
    }

    /// <summary>The stdout lines so far, with the time each arrived.</summary>
    public IReadOnlyList<OutputLine> Lines
    {
        get
        {
            lock (_gate)
            {
                return [.. _stdout];
            }
        }
    }

    /// <summary>How many stdout lines so far: a mark for the <c>from</c> of a wait, to wait for a line that comes after an event.</summary>
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

    /// <summary>The command line, then every line so far (stderr marked), for failure messages.</summary>
    public string Transcript
    {
        get
        {
            lock (_gate)
            {
                return $"$ {CommandLine}\n" + string.Join('\n', _transcript);
            }
        }
    }

    /// <summary>
    /// Starts <paramref name="program"/> (a path, or a name looked up on PATH) for at most <paramref name="lifetime"/>.
    /// <paramref name="standardInput"/> is written to its stdin, which is then closed unless <paramref name="keepInputOpen"/>.
    /// </summary>
    public static ToolProcess Start(string program, IEnumerable<string> arguments, TimeSpan lifetime, string? workingDirectory = null, string? standardInput = null, bool keepInputOpen = false)
    {
        var path = program.Contains('/', StringComparison.Ordinal) ? program : ExternalTool.Find(program);
        var seconds = ((int)Math.Ceiling(lifetime.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        string[] argumentList = [.. arguments];
        var start = new ProcessStartInfo("timeout", ["-s", "KILL", seconds, path, .. argumentList])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var tool = new ToolProcess(process, path + " " + string.Join(' ', argumentList));
        process.OutputDataReceived += (_, e) => tool.OnLine(e.Data, stdout: true);
        process.ErrorDataReceived += (_, e) => tool.OnLine(e.Data, stdout: false);
        process.Start();
        if (standardInput is not null)
        {
            process.StandardInput.Write(standardInput);
        }

        if (!keepInputOpen)
        {
            process.StandardInput.Close();
        }

        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return tool;
    }

    /// <summary>Writes one line to the process's stdin (started with <c>keepInputOpen</c>).</summary>
    public async Task WriteLineAsync(string line)
    {
        await _process.StandardInput.WriteLineAsync(line);
        await _process.StandardInput.FlushAsync();
    }

    /// <summary>Waits for a stdout line matching <paramref name="match"/>; fails with the transcript when the process ends first or the time runs out.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, string what, TimeSpan? timeout = null, int from = 0) =>
        (await WaitForOutputLineAsync(match, what, timeout, from)).Text;

    /// <summary>
    /// Waits for a stdout line matching <paramref name="match"/>, looking only at lines from index <paramref name="from"/>
    /// on (a <see cref="LineCount"/> taken earlier), and returns it with its arrival time; fails with the
    /// transcript when the process ends first or the time runs out.
    /// </summary>
    public async Task<OutputLine> WaitForOutputLineAsync(Func<string, bool> match, string what, TimeSpan? timeout = null, int from = 0)
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
                Assert.Fail($"{what}: the process ended without it.\n{Transcript}{await DescribeAsync()}");
            }

            try
            {
                await changed.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"{what}: timed out.\n{Transcript}{await DescribeAsync()}");
            }
        }
    }

    /// <summary>
    /// Waits until <paramref name="endpoint"/> accepts a TCP connection, the one readiness signal a server
    /// process gives from outside (polled, each try bounded); fails with the transcript when the process exits
    /// first or the time runs out.
    /// </summary>
    public Task WaitForListenerAsync(IPEndPoint endpoint, string what, TimeSpan? timeout = null) =>
        Poll.UntilAsync(
            async () =>
            {
                if (HasExited)
                {
                    Assert.Fail($"{what} exited before it listened on {endpoint}.\n{Transcript}{await DescribeAsync()}");
                }

                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                using var client = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    await client.ConnectAsync(endpoint, attempt.Token);
                    return true;
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException)
                {
                    return false;
                }
            },
            $"{what} to listen on {endpoint}",
            timeout ?? TimeSpan.FromSeconds(60),
            TimeSpan.FromMilliseconds(20),
            async () => Transcript + await DescribeAsync());

    /// <summary>Waits for the process to exit and returns its exit code; kills it and fails on timeout.</summary>
    public async Task<int> WaitForExitAsync(string what, TimeSpan? timeout = null)
    {
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await _process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
            Assert.Fail($"{what}: the process did not exit in time.\n{Transcript}");
        }

        return _process.ExitCode;
    }

    /// <summary>
    /// Ends the process the polite way: closes its stdin (the end of input, which a process reading commands
    /// takes as the signal to stop), waits up to <paramref name="grace"/> for it to exit, then kills it.
    /// </summary>
    public async Task CloseInputAsync(TimeSpan grace)
    {
        try
        {
            _process.StandardInput.Close();
        }
        catch (InvalidOperationException)
        {
        }

        using var exit = new CancellationTokenSource(grace);
        try
        {
            await _process.WaitForExitAsync(exit.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
        }
    }

    /// <summary>SIGKILL to the process and its children (no chance to send DISCONNECT or save state).</summary>
    public void Kill()
    {
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
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Kill();
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

    private async Task<string> DescribeAsync() => Describe is { } describe ? "\n" + await describe() : string.Empty;

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
                    _stdout.Add(new OutputLine(line, at));
                }
            }

            changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
    }
}
