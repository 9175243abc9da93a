using System.CommandLine;

namespace Relay.Server.Cli;

/// <summary>
/// Parses and runs a <see cref="RootCommand"/> the way every <c>relay</c> subcommand reports: a usage mistake
/// prints what was wrong and the usage to the error writer and exits 2; <c>--help</c> prints to the output
/// writer and exits 0; otherwise the command's action decides the exit code.
/// </summary>
internal static class CommandLineRunner
{
    // Response files (@file) are off: a token that starts with '@' is an argument (a payload, a secret).
    private static readonly ParserConfiguration Parser = new() { ResponseFileTokenReplacer = null };

    public static async Task<int> RunAsync(RootCommand root, string[] args, TextWriter output, TextWriter error, string usage, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var parsed = root.Parse(args, Parser);
        if (parsed.Errors.Count > 0)
        {
            foreach (var problem in parsed.Errors)
            {
                await error.WriteLineAsync($"relay: {problem.Message}").ConfigureAwait(false);
            }

            await error.WriteLineAsync(usage).ConfigureAwait(false);
            return 2;
        }

        // The host handles SIGINT/SIGTERM itself (graceful shutdown); the parser must not cut it short.
        return await parsed.InvokeAsync(new InvocationConfiguration { Output = output, Error = error, ProcessTerminationTimeout = null }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The tokens left over for configuration (<c>--Relay:DataDirectory=DIR</c>), or null when one of them is not
    /// a <c>--</c> setting (a stray word is a usage mistake, not configuration).
    /// </summary>
    public static string[]? ConfigurationArguments(ParseResult parsed)
    {
        ArgumentNullException.ThrowIfNull(parsed);
        return parsed.UnmatchedTokens.All(static t => t.StartsWith("--", StringComparison.Ordinal))
            ? [.. parsed.UnmatchedTokens]
            : null;
    }
}
