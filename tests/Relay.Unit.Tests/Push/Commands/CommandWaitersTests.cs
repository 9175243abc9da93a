using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>The long-poll registry the command loop owns: a bound on waiters, and every waiter of a command taken at once.</summary>
public sealed class CommandWaitersTests
{
    [Fact]
    public void Waiters_are_counted_against_the_limit_and_freed_when_taken_or_removed()
    {
        var waiters = new CommandWaiters(limit: 2);
        var (a, b, c) = (Waiter(), Waiter(), Waiter());
        Assert.True(waiters.TryAdd("c1", a));
        Assert.True(waiters.TryAdd("c1", b));
        Assert.False(waiters.TryAdd("c2", c));
        Assert.Equal(2, waiters.Count);

        var wake = new List<TaskCompletionSource<CommandError>>();
        waiters.TakeAll("c1", wake);
        Assert.Equal([a, b], wake);
        Assert.Equal(0, waiters.Count);

        // Taken already: removing it again changes nothing.
        waiters.Remove("c1", a);
        Assert.Equal(0, waiters.Count);

        Assert.True(waiters.TryAdd("c2", c));
        waiters.Remove("c2", c);
        Assert.Equal(0, waiters.Count);
        wake.Clear();
        waiters.TakeAll("c2", wake);
        Assert.Empty(wake);
    }

    [Fact]
    public void A_limit_of_zero_refuses_every_waiter()
    {
        var waiters = new CommandWaiters(limit: 0);
        Assert.False(waiters.TryAdd("c1", Waiter()));
        Assert.Equal(0, waiters.Count);
    }

    private static TaskCompletionSource<CommandError> Waiter() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
