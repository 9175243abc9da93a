namespace Relay.DeviceClient.Internal;

/// <summary>
/// Work a client started on its own (command handlers, sends nobody awaits, NAT discovery) that must be done
/// before it stops. A task leaves the set when it completes, so the set holds only what still runs.
/// </summary>
internal sealed class BackgroundTasks
{
    private readonly HashSet<Task> _running = [];

    public void Track(Task task)
    {
        lock (_running)
        {
            _running.Add(task);
        }

        _ = task.ContinueWith(
            t =>
            {
                lock (_running)
                {
                    _running.Remove(t);
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    /// <summary>Completes when every task tracked so far has.</summary>
    public Task WhenAll()
    {
        Task[] running;
        lock (_running)
        {
            running = [.. _running];
        }

        return Task.WhenAll(running);
    }
}
