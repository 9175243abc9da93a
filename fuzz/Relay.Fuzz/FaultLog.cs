using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Relay.Fuzz;

/// <summary>
/// Collects what the server logged at Error or above. The server catches a fault in one datagram or one
/// session and logs it at Error (so a listener survives it); for the fuzzer that is a finding all the same,
/// so a target throws <see cref="FuzzFinding"/> when anything was collected for an input.
/// </summary>
internal sealed class FaultLog : ILoggerProvider
{
    private const int MaxKept = 16;
    private readonly ConcurrentQueue<string> _errors = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    /// <summary>Throws when the input made the server log an error; clears the log for the next input.</summary>
    public void ThrowIfAny(string target)
    {
        if (_errors.IsEmpty)
        {
            return;
        }

        var errors = new List<string>();
        while (_errors.TryDequeue(out var error))
        {
            errors.Add(error);
        }

        throw new FuzzFinding($"{target}: the server logged an error:\n{string.Join('\n', errors)}");
    }

    private sealed class Logger(FaultLog owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel < LogLevel.Error || owner._errors.Count >= MaxKept)
            {
                return;
            }

            owner._errors.Enqueue($"{category}[{eventId.Id}]: {formatter(state, exception)}{(exception is null ? string.Empty : "\n" + exception)}");
        }
    }
}

/// <summary>An input broke an invariant of the server (thrown, logged an error, hung or kept state it should not).</summary>
internal sealed class FuzzFinding : Exception
{
    public FuzzFinding(string message)
        : base(message)
    {
    }

    public FuzzFinding(string message, Exception inner)
        : base(message, inner)
    {
    }

    public FuzzFinding()
    {
    }
}
