using System.Diagnostics;
using System.Text;

namespace Relay.Server.Tests.Nat;

/// <summary>What a short lab command printed and how it ended.</summary>
public sealed record LabResult(string CommandLine, int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    public override string ToString() => $"$ {CommandLine}\nexit {ExitCode}\n{Stdout}{(Stderr.Length > 0 ? "stderr: " + Stderr : string.Empty)}";
}

/// <summary>Runs the short-lived commands that build and inspect the lab (ip, nft, sysctl, conntrack).</summary>
internal static class LabShell
{
    // Test hosts do not always have the sbin directories on PATH, even as root.
    private static readonly string[] s_extraDirectories = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

    public static string? Find(string program)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? string.Empty;
        return path.Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(s_extraDirectories)
            .Select(directory => Path.Combine(directory, program))
            .FirstOrDefault(File.Exists);
    }

    public static string Require(string program) =>
        Find(program) ?? throw new InvalidOperationException($"{program} is not installed (apt-get install iproute2 nftables conntrack)");

    public static async Task<LabResult> RunAsync(string program, IReadOnlyList<string> arguments, string? standardInput = null, TimeSpan? timeout = null)
    {
        var path = program.Contains('/', StringComparison.Ordinal) ? program : Require(program);
        var start = new ProcessStartInfo(path)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        var commandLine = path + " " + string.Join(' ', arguments);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start " + commandLine);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (standardInput is not null)
        {
            await process.StandardInput.WriteAsync(standardInput);
        }

        process.StandardInput.Close();
        using var deadline = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
            return new LabResult(commandLine, -1, await stdout, await stderr + "\n(killed: did not finish in time)");
        }

        return new LabResult(commandLine, process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs a command that building the lab depends on; a failure stops the build with its output.</summary>
    public static async Task<LabResult> MustAsync(string program, IReadOnlyList<string> arguments, string? standardInput = null)
    {
        var result = await RunAsync(program, arguments, standardInput);
        if (!result.Succeeded)
        {
            var text = new StringBuilder("NAT lab: a setup command failed\n").Append(result);
            if (standardInput is not null)
            {
                text.Append("\nstdin:\n").Append(standardInput);
            }

            throw new InvalidOperationException(text.ToString());
        }

        return result;
    }
}
