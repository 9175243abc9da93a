using System.Diagnostics;
using System.Globalization;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// An external process (broker or client) whose output lines a test waits on. Every process runs under
/// coreutils <c>timeout -s KILL</c>, so it ends even if the test host dies; dispose kills the whole tree.
/// </summary>
public sealed class ToolProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly List<string> _stdout = [];
    private readonly List<string> _transcript = [];
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _streamsOpen = 2;

    private ToolProcess(Process process, string commandLine)
    {
        _process = process;
        CommandLine = commandLine;
    }

    public string CommandLine { get; }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public IReadOnlyList<string> StdoutLines
    {
        get
        {
            lock (_gate)
            {
                return [.. _stdout];
            }
        }
    }

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

    public static ToolProcess Start(string program, IEnumerable<string> arguments, TimeSpan lifetime, string? workingDirectory = null, string? standardInput = null)
    {
        var path = program.Contains('/', StringComparison.Ordinal) ? program : ExternalTool.Find(program);
        var seconds = ((int)Math.Ceiling(lifetime.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        var start = new ProcessStartInfo("timeout", ["-s", "KILL", seconds, path, .. arguments])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var tool = new ToolProcess(process, path + " " + string.Join(' ', arguments));
        process.OutputDataReceived += (_, e) => tool.OnLine(e.Data, stdout: true);
        process.ErrorDataReceived += (_, e) => tool.OnLine(e.Data, stdout: false);
        process.Start();
        if (standardInput is not null)
        {
            process.StandardInput.Write(standardInput);
        }

        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return tool;
    }

    /// <summary>Waits for a stdout line matching <paramref name="match"/>; fails with the transcript when the process ends first or the time runs out.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, string what, TimeSpan? timeout = null)
    {
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        var index = 0;
        while (true)
        {
            Task changed;
            bool ended;
            lock (_gate)
            {
                for (; index < _stdout.Count; index++)
                {
                    if (match(_stdout[index]))
                    {
                        return _stdout[index];
                    }
                }

                changed = _changed.Task;
                ended = _streamsOpen == 0;
            }

            if (ended)
            {
                Assert.Fail($"{what}: the process ended without it.\n{Transcript}");
            }

            try
            {
                await changed.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"{what}: timed out.\n{Transcript}");
            }
        }
    }

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

    private void OnLine(string? line, bool stdout)
    {
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
                    _stdout.Add(line);
                }
            }

            changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
    }
}
