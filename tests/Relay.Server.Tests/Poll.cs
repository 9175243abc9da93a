namespace Relay.Server.Tests;

/// <summary>
/// The one way these tests wait for something that happens elsewhere and raises no event (a counter, a
/// metric, a released port): poll the condition, bounded, and fail saying what never happened. Where there is
/// an event (a task, a line of output), wait for the event instead.
/// </summary>
internal static class Poll
{
    public static readonly TimeSpan DefaultBound = TimeSpan.FromSeconds(20);
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(10);

    /// <summary>Waits until <paramref name="condition"/> holds; fails after <paramref name="bound"/> with <paramref name="what"/> and, if given, <paramref name="describe"/>'s context.</summary>
    public static Task UntilAsync(Func<bool> condition, string what, TimeSpan? bound = null, TimeSpan? interval = null, Func<Task<string>>? describe = null) =>
        UntilAsync(() => Task.FromResult(condition()), what, bound, interval, describe);

    /// <inheritdoc cref="UntilAsync(Func{bool}, string, TimeSpan?, TimeSpan?, Func{Task{string}}?)"/>
    public static async Task UntilAsync(Func<Task<bool>> condition, string what, TimeSpan? bound = null, TimeSpan? interval = null, Func<Task<string>>? describe = null)
    {
        var limit = bound ?? DefaultBound;
        using var timeout = new CancellationTokenSource(limit);
        while (!await condition())
        {
            if (timeout.IsCancellationRequested)
            {
                Assert.Fail($"Timed out after {limit.TotalSeconds:0.#} s waiting for {what}" + (describe is null ? string.Empty : "\n" + await describe()));
            }

            await Task.Delay(interval ?? DefaultInterval, CancellationToken.None);
        }
    }
}
