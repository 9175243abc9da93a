namespace Relay.Server.Push.Commands;

/// <summary>
/// Retention of finished commands (review M4): the loop's sweep starts a prune at most once an hour (the first
/// one at the first sweep after start); the prune runs off the loop, as a chain of bounded operations of the
/// store's writer, so neither the loop nor anyone's commit waits for a large delete. Owns when the next prune
/// is due and the prune in progress; logs under the command loop's category.
/// </summary>
internal sealed partial class CommandRetention : IDisposable
{
    /// <summary>Commands (with their transitions) deleted per store operation, hence per transaction at most.</summary>
    internal const int PruneBatch = 1000;

    private const int VacuumPagesPerStep = 2048;
    private static readonly TimeSpan PruneInterval = TimeSpan.FromHours(1);

    private readonly CommandStore _store;
    private readonly PushMetrics _metrics;
    private readonly int _retainFinishedDays;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private DateTimeOffset _nextPruneAt = DateTimeOffset.MinValue;
    private Task _pruning = Task.CompletedTask;

    public CommandRetention(CommandStore store, PushMetrics metrics, int retainFinishedDays, ILogger logger)
    {
        _store = store;
        _metrics = metrics;
        _retainFinishedDays = retainFinishedDays;
        _logger = logger;
    }

    /// <summary>Called by the loop's sweep: starts a prune when one is due and none is running.</summary>
    public void StartPruneIfDue(DateTimeOffset now)
    {
        if (now < _nextPruneAt || !_pruning.IsCompleted)
        {
            return;
        }

        _nextPruneAt = now + PruneInterval;
        _pruning = PruneAsync(now - TimeSpan.FromDays(_retainFinishedDays), _stopping.Token);
    }

    /// <summary>Stops a prune in progress; the store is disposed after the loop, so a prune must not be left writing to it.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _pruning.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    public void Dispose() => _stopping.Dispose();

    /// <summary>Deletes commands final before <paramref name="cutoff"/>, a batch per operation, then gives the freed pages back.</summary>
    private async Task PruneAsync(DateTimeOffset cutoff, CancellationToken stopping)
    {
        long pruned = 0;
        try
        {
            int deleted;
            do
            {
                deleted = await _store.PruneAsync(cutoff, PruneBatch, stopping).ConfigureAwait(false);
                pruned += deleted;
                _metrics.CountPruned(deleted);
            }
            while (deleted == PruneBatch && !stopping.IsCancellationRequested);

            if (pruned > 0)
            {
                // Bounded steps too: a file that shrinks by gigabytes does so between other writes.
                while (!stopping.IsCancellationRequested && await _store.VacuumAsync(VacuumPagesPerStep, stopping).ConfigureAwait(false) > 0)
                {
                }

                LogPruned(pruned, _retainFinishedDays);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException && stopping.IsCancellationRequested)
        {
            // Stopping: the next start prunes what is left.
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Retried at the next hourly sweep; the metric shows whether pruning keeps up.
            LogPruneFailed(e, pruned);
        }
    }

    [LoggerMessage(
        EventId = 7011,
        Level = LogLevel.Information,
        Message = "Push: deleted {Count} command(s) final for more than {Days} day(s) (Relay:Push:RetainFinishedDays), with their transitions")]
    private partial void LogPruned(long count, int days);

    [LoggerMessage(
        EventId = 7012,
        Level = LogLevel.Error,
        Message = "Push: pruning finished commands failed after {Count} deletion(s); retried within the hour")]
    private partial void LogPruneFailed(Exception exception, long count);
}
