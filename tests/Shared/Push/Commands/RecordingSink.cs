using Relay.Server.Devices;
using Relay.Server.Push;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>Records every announced transition; tests wait on it instead of sleeping.</summary>
internal sealed class RecordingSink : IPushEventSink
{
    private readonly Lock _gate = new();
    private readonly List<CommandTransition> _transitions = [];
    private readonly List<(Func<CommandTransition, bool> Match, TaskCompletionSource<CommandTransition> Done)> _waiting = [];

    public IReadOnlyList<CommandTransition> Transitions
    {
        get
        {
            lock (_gate)
            {
                return [.. _transitions];
            }
        }
    }

    /// <summary>
    /// When set, each transition waits for it (at most 30 s) before it is recorded: the command loop calls
    /// sinks on its own thread, so this stalls the loop as an overloaded one would.
    /// </summary>
    public SemaphoreSlim? Hold { get; set; }

    public void OnCommandTransition(CommandTransition transition)
    {
        Hold?.Wait(TimeSpan.FromSeconds(30));
        lock (_gate)
        {
            _transitions.Add(transition);
            foreach (var w in _waiting.Where(w => w.Match(transition)).ToList())
            {
                _waiting.Remove(w);
                w.Done.TrySetResult(transition);
            }
        }
    }

    public void OnPresenceChanged(DevicePresence presence)
    {
    }

    public Task<CommandTransition> WaitAsync(string commandId, CommandState state)
    {
        bool Match(CommandTransition t) => t.CommandId == commandId && t.State == state;
        lock (_gate)
        {
            if (_transitions.FirstOrDefault(Match) is { } seen)
            {
                return Task.FromResult(seen);
            }

            var done = new TaskCompletionSource<CommandTransition>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting.Add((Match, done));
            return done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }
}
