using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>The rules of <see cref="CommandLifecycle"/>, state by state: no store, no broker, no threads.</summary>
public sealed class CommandLifecycleStateMachineTests
{
    private const CommandState Queued = CommandState.Queued;
    private const CommandState Delivered = CommandState.Delivered;
    private const CommandState Succeeded = CommandState.Succeeded;
    private const CommandState Failed = CommandState.Failed;
    private const CommandState Expired = CommandState.Expired;
    private const CommandState Canceled = CommandState.Canceled;

    private static readonly CommandState[] AllStates = Enum.GetValues<CommandState>();

    private static readonly HashSet<(CommandState From, CommandState To)> LegalSteps =
    [
        (Queued, Delivered),
        (Queued, Expired),
        (Queued, Canceled),
        (Delivered, Succeeded),
        (Delivered, Failed),
        (Delivered, Expired),
    ];

    [Fact]
    public void Every_pair_of_states_is_legal_exactly_when_it_is_a_step_of_the_lifecycle()
    {
        Assert.Equal(6, AllStates.Length);
        foreach (var from in AllStates)
        {
            foreach (var to in AllStates)
            {
                Assert.True(LegalSteps.Contains((from, to)) == CommandLifecycle.IsLegal(from, to), $"{from} → {to}");
            }
        }
    }

    [Fact]
    public void Succeeded_failed_expired_and_canceled_are_final_and_nothing_leaves_them()
    {
        CommandState[] final = [Succeeded, Failed, Expired, Canceled];
        foreach (var state in AllStates)
        {
            Assert.Equal(final.Contains(state), CommandLifecycle.IsFinal(state));
            if (CommandLifecycle.IsFinal(state))
            {
                Assert.All(AllStates, to => Assert.False(CommandLifecycle.IsLegal(state, to)));
            }
        }
    }

    [Fact]
    public void Only_a_queued_command_is_delivered_by_an_acknowledgement()
    {
        foreach (var state in AllStates)
        {
            var moves = CommandLifecycle.TryAcknowledge(state, out var next);
            Assert.Equal(state == Queued, moves);
            if (moves)
            {
                Assert.Equal(Delivered, next);
                Assert.True(CommandLifecycle.IsLegal(state, next));
            }
        }
    }

    [Fact]
    public void A_result_proves_delivery_and_makes_the_command_final()
    {
        (CommandState State, bool Succeeded, bool ThroughDelivered, CommandState Final)[] cases =
        [
            (Queued, true, true, Succeeded),
            (Queued, false, true, Failed),
            (Delivered, true, false, Succeeded),
            (Delivered, false, false, Failed),
        ];
        foreach (var (state, succeeded, throughDelivered, final) in cases)
        {
            var steps = CommandLifecycle.OnResult(state, succeeded);
            Assert.False(steps.IsDuplicate);
            Assert.Equal(throughDelivered, steps.ProvesDelivery);
            Assert.Equal(final, steps.Final);

            // Every step it implies is legal, in order.
            var at = state;
            if (steps.ProvesDelivery)
            {
                Assert.True(CommandLifecycle.IsLegal(at, Delivered));
                at = Delivered;
            }

            Assert.True(CommandLifecycle.IsLegal(at, steps.Final));
        }
    }

    [Fact]
    public void A_result_for_a_final_command_is_a_duplicate()
    {
        var final = AllStates.Where(CommandLifecycle.IsFinal).ToArray();
        Assert.Equal(4, final.Length);
        foreach (var state in final)
        {
            Assert.True(CommandLifecycle.OnResult(state, succeeded: true).IsDuplicate);
            Assert.True(CommandLifecycle.OnResult(state, succeeded: false).IsDuplicate);
        }
    }

    [Fact]
    public void What_a_device_result_reports()
    {
        Assert.Equal(Succeeded, CommandLifecycle.ResultState(succeeded: true));
        Assert.Equal(Failed, CommandLifecycle.ResultState(succeeded: false));
    }

    [Fact]
    public void Only_a_queued_command_not_yet_handed_to_the_connection_can_be_canceled()
    {
        foreach (var state in AllStates)
        {
            Assert.Equal(state == Queued, CommandLifecycle.CanCancel(state, handedToConnection: false));
            Assert.False(CommandLifecycle.CanCancel(state, handedToConnection: true));
        }
    }

    [Fact]
    public void A_command_expires_when_its_ttl_has_passed_unless_it_is_final()
    {
        var expiresAt = new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);
        foreach (var state in AllStates)
        {
            Assert.False(CommandLifecycle.HasExpired(state, expiresAt, expiresAt.AddTicks(-1)));
            Assert.Equal(!CommandLifecycle.IsFinal(state), CommandLifecycle.HasExpired(state, expiresAt, expiresAt));
            Assert.Equal(!CommandLifecycle.IsFinal(state), CommandLifecycle.HasExpired(state, expiresAt, expiresAt.AddHours(1)));
            if (CommandLifecycle.HasExpired(state, expiresAt, expiresAt))
            {
                Assert.True(CommandLifecycle.IsLegal(state, Expired));
            }
        }
    }

    [Fact]
    public void Only_a_queued_command_within_its_ttl_goes_out()
    {
        var expiresAt = new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);
        foreach (var state in AllStates)
        {
            Assert.Equal(state == Queued, CommandLifecycle.IsDeliverable(state, expiresAt, expiresAt.AddTicks(-1)));
            Assert.False(CommandLifecycle.IsDeliverable(state, expiresAt, expiresAt));
        }
    }

    [Fact]
    public void A_queued_command_with_a_notBefore_goes_out_only_from_then_and_within_its_ttl()
    {
        var notBefore = new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);
        var expiresAt = notBefore.AddHours(1);
        foreach (var state in AllStates)
        {
            Assert.False(CommandLifecycle.IsDeliverable(state, expiresAt, notBefore, notBefore.AddTicks(-1)));
            Assert.Equal(state == Queued, CommandLifecycle.IsDeliverable(state, expiresAt, notBefore, notBefore));
            Assert.Equal(state == Queued, CommandLifecycle.IsDeliverable(state, expiresAt, null, notBefore));
            Assert.False(CommandLifecycle.IsDeliverable(state, expiresAt, notBefore, expiresAt));

            // Held, it is still queued: cancelable like any queued command not yet with the device's connection.
            Assert.Equal(state == Queued, CommandLifecycle.CanCancel(state, handedToConnection: false));
        }
    }
}
