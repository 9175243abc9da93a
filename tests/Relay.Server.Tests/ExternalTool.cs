using System.Diagnostics;

namespace Relay.Server.Tests;

/// <summary>
/// Runs the real third-party peers (coturn's turnutils, Debian's stun client). test.sh installs them; a
/// missing binary fails the test, because a skipped interop test would let CI go green having proved nothing.
/// </summary>
internal static class ExternalTool
{
    public static string Find(string program)
    {
        var path = Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(directory => Path.Combine(directory, program)).FirstOrDefault(File.Exists);
        Assert.True(path is not null, $"{program} is not installed; ./test.sh installs it (apt-get install coturn stun-client)");
        return path!;
    }

    public static async Task<(int ExitCode, string Output)> RunAsync(string program, params string[] arguments)
    {
        var path = Find(program);

        // `timeout` as well as our own bound: these clients hang forever when no answer comes.
        var start = new ProcessStartInfo("timeout", ["60", path, .. arguments])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            WorkingDirectory = Path.GetTempPath(),
        };
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>Starts a long-running peer; dispose kills it.</summary>
    public static BackgroundTool Start(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(Find(program), arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        var process = Process.Start(start)!;
        process.StandardInput.Close();
        return new BackgroundTool(process);
    }
}

internal sealed class BackgroundTool(Process process) : IDisposable
{
    private readonly Task<string> _stdout = process.StandardOutput.ReadToEndAsync();
    private readonly Task<string> _stderr = process.StandardError.ReadToEndAsync();

    /// <summary>Ends the tool if it still runs and returns everything it printed, for assertion messages.</summary>
    public async Task<string> StopAsync()
    {
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
        }

        await process.WaitForExitAsync();
        return await _stdout + await _stderr;
    }

    public void Dispose()
    {
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
        }

        process.WaitForExit();
        _ = _stdout.Result + _stderr.Result;
        process.Dispose();
    }
}
