using Microsoft.Extensions.Logging;

namespace BlinkDevice;

/// <summary>
/// A one-line-per-event console logger. Microsoft.Extensions.Logging.Console would pull in the
/// configuration and options stacks, which is most of a trimmed device binary's size for no gain here.
/// </summary>
internal sealed class ConsoleLoggerFactory(LogLevel minimum) : ILoggerFactory
{
    private static readonly Lock Gate = new();

    public ILogger CreateLogger(string categoryName) => new ConsoleLogger(categoryName, minimum);

    public void AddProvider(ILoggerProvider provider) => throw new NotSupportedException("The sample logs to the console only.");

    public void Dispose()
    {
    }

    private sealed class ConsoleLogger(string category, LogLevel minimum) : ILogger
    {
        private readonly string _category = category[(category.LastIndexOf('.') + 1)..];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum && logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            var level = logLevel switch
            {
                LogLevel.Trace => "trce",
                LogLevel.Debug => "dbug",
                LogLevel.Information => "info",
                LogLevel.Warning => "warn",
                LogLevel.Error => "fail",
                _ => "crit",
            };
            var line = $"{DateTime.UtcNow:HH:mm:ss.fff} {level} {_category}: {formatter(state, exception)}";
            lock (Gate)
            {
                Console.Out.WriteLine(exception is null ? line : line + Environment.NewLine + exception);
                Console.Out.Flush();
            }
        }
    }
}
