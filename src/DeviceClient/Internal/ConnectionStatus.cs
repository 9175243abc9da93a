namespace Relay.DeviceClient.Internal;

/// <summary>
/// The client's <see cref="DeviceConnectionState"/> and the signal that connection waiters wait on. Stopped is
/// final: nothing leaves it, and waiters then fail.
/// </summary>
internal sealed class ConnectionStatus
{
    private readonly object _gate = new();
    private DeviceConnectionState _state = DeviceConnectionState.Disconnected;
    private TaskCompletionSource _connected = NewSignal();

    public DeviceConnectionState Current
    {
        get
        {
            lock (_gate)
            {
                return _state;
            }
        }
    }

    /// <summary>Completes when connected (at once if it is); fails when stopped.</summary>
    public Task WaitConnectedAsync(CancellationToken cancellationToken)
    {
        Task signal;
        lock (_gate)
        {
            if (_state == DeviceConnectionState.Stopped)
            {
                return Task.FromException(new InvalidOperationException("The client is stopped."));
            }

            signal = _connected.Task;
        }

        return signal.WaitAsync(cancellationToken);
    }

    /// <summary>Moves to <paramref name="state"/>; false when that is the state already, or the status is Stopped.</summary>
    public bool TryMoveTo(DeviceConnectionState state, out DeviceConnectionState previous)
    {
        lock (_gate)
        {
            previous = _state;
            if (previous == state || previous == DeviceConnectionState.Stopped)
            {
                return false;
            }

            _state = state;
            if (state == DeviceConnectionState.Connected)
            {
                _connected.TrySetResult();
            }
            else if (previous == DeviceConnectionState.Connected)
            {
                _connected = NewSignal();
            }

            if (state == DeviceConnectionState.Stopped)
            {
                _connected.TrySetException(new InvalidOperationException("The client is stopped."));
                _ = _connected.Task.Exception; // observed: waiters get it, nobody else must
            }

            return true;
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
