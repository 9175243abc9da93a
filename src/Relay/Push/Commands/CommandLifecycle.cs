namespace Relay.Server.Push.Commands;

/// <summary>
/// The rules of a command's life, and nothing else: no I/O, no clock, no threads. The legal steps:
/// <code>
/// queued    → delivered            the device acknowledged the PUBLISH (or its result came first)
/// queued    → canceled             an operator, while it is not yet handed to the device's connection
/// queued    → expired              its TTL passed
/// delivered → succeeded | failed   the device's result
/// delivered → expired              its TTL passed before a result came
/// </code>
/// Succeeded, failed, expired and canceled are final: nothing leaves them, and a second result for a
/// final command is a duplicate (ignored, never recorded twice).
/// A command with a <c>notBefore</c> is queued like any other and keeps every step above; it is only not
/// deliverable before that time (<see cref="IsDeliverable(CommandState, DateTimeOffset, DateTimeOffset?, DateTimeOffset)"/>),
/// so it stays cancelable until then. Not a state of its own: nothing else about it differs.
/// </summary>
internal static class CommandLifecycle
{
    /// <summary>Whether nothing can happen to a command in <paramref name="state"/> any more.</summary>
    /// <remarks>By the enum's order, which commands.db shares (<c>state &lt; 2</c> is "not final").</remarks>
    public static bool IsFinal(CommandState state) => state >= CommandState.Succeeded;

    /// <summary>Whether one step from <paramref name="from"/> to <paramref name="to"/> is allowed.</summary>
    public static bool IsLegal(CommandState from, CommandState to) => (from, to) switch
    {
        (CommandState.Queued, CommandState.Delivered or CommandState.Expired or CommandState.Canceled) => true,
        (CommandState.Delivered, CommandState.Succeeded or CommandState.Failed or CommandState.Expired) => true,
        _ => false,
    };

    /// <summary>
    /// The device acknowledged the command's PUBLISH (PUBACK for QoS 1, PUBCOMP for QoS 2; MQTT 5 §4.3.2,
    /// §4.3.3): a queued command is delivered. In any other state the acknowledgement changes nothing (a
    /// redelivery's second acknowledgement, or the command was canceled or expired meanwhile).
    /// </summary>
    public static bool TryAcknowledge(CommandState state, out CommandState next)
    {
        next = CommandState.Delivered;
        return state == CommandState.Queued;
    }

    /// <summary>
    /// What a device's result does to a command in <paramref name="state"/>. A result proves delivery:
    /// clients commonly answer from their message callback before they send the PUBACK (paho does), so
    /// the result may come first, and a queued command then steps through delivered, keeping its history
    /// queued → delivered → final.
    /// </summary>
    public static ResultSteps OnResult(CommandState state, bool succeeded)
    {
        if (IsFinal(state))
        {
            return ResultSteps.Duplicate;
        }

        return new ResultSteps(false, state == CommandState.Queued, ResultState(succeeded));
    }

    /// <summary>The final state a device's result reports.</summary>
    public static CommandState ResultState(bool succeeded) => succeeded ? CommandState.Succeeded : CommandState.Failed;

    /// <summary>
    /// Whether an operator may cancel the command: only while it is queued and not yet handed to the
    /// device's connection. Once on its way it may run, so it can no longer be canceled.
    /// </summary>
    public static bool CanCancel(CommandState state, bool handedToConnection) =>
        state == CommandState.Queued && !handedToConnection;

    /// <summary>Whether the command's TTL has passed while it was not final.</summary>
    public static bool HasExpired(CommandState state, DateTimeOffset expiresAt, DateTimeOffset now) =>
        !IsFinal(state) && expiresAt <= now;

    /// <summary>Whether a queued command may still go out to its device.</summary>
    public static bool IsDeliverable(CommandState state, DateTimeOffset expiresAt, DateTimeOffset now) =>
        state == CommandState.Queued && expiresAt > now;

    /// <summary>Whether a queued command may go out to its device now: not expired, and its <paramref name="notBefore"/> (if any) reached.</summary>
    public static bool IsDeliverable(CommandState state, DateTimeOffset expiresAt, DateTimeOffset? notBefore, DateTimeOffset now) =>
        IsDeliverable(state, expiresAt, now) && (notBefore is not { } from || from <= now);
}

/// <summary>
/// The steps a device's result takes a command through: none when it is a <see cref="IsDuplicate"/>;
/// else through delivered first when <see cref="ProvesDelivery"/>, then to <see cref="Final"/>.
/// </summary>
internal readonly record struct ResultSteps(bool IsDuplicate, bool ProvesDelivery, CommandState Final)
{
    /// <summary>The command was final already: the result is ignored.</summary>
    public static ResultSteps Duplicate => new(true, false, default);
}
