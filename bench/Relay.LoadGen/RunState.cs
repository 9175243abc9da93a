namespace Relay.LoadGen;

internal enum RunPhase
{
    Warmup = 0,
    Measure = 1,
    Drain = 2,
}

/// <summary>Phase shared by all workers; read on every packet, so a plain volatile int.</summary>
internal sealed class RunState
{
    private volatile int _phase;

    public RunPhase Phase
    {
        get => (RunPhase)_phase;
        set => _phase = (int)value;
    }
}
