using Microsoft.Extensions.Options;

namespace Relay.Server.Hosting;

/// <summary>
/// A configuration problem that must stop startup. Each line of the message names a key
/// (<c>Relay:Section:Key: problem</c>); the process exits with code 2.
/// </summary>
public sealed class RelayConfigurationException(string message) : Exception(message)
{
    /// <summary>One exception listing every problem, one per line, under "Invalid configuration:".</summary>
    public static RelayConfigurationException FromProblems(IEnumerable<string> problems) =>
        new("Invalid configuration:" + Environment.NewLine + "  " + string.Join(Environment.NewLine + "  ", problems));

    /// <summary>
    /// Turns what startup validation threw (one <see cref="OptionsValidationException"/>, or an
    /// <see cref="AggregateException"/> of them, one per options type) into one list of problems.
    /// </summary>
    internal static RelayConfigurationException FromValidation(Exception validation)
    {
        var failures = validation is AggregateException aggregate ? aggregate.InnerExceptions : [validation];
        return FromProblems(failures.SelectMany(static e => e is OptionsValidationException options ? options.Failures : [e.Message]));
    }
}
