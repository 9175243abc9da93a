namespace Relay.Server.Tests;

/// <summary>
/// Tests that measure the whole test process (open descriptors, managed heap) run alone: other test
/// classes run in parallel by default, and their servers and sockets would move those figures.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideCollection
{
    public const string Name = "Process-wide measurements";
}
