using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>
/// The command loop without sockets (<see cref="CommandLoopHarness"/>): delivery, results, expiry on a fake
/// clock, waiters, cancel, limits, a restart and a failed commit. Every transition must be stored before
/// it is announced.
/// </summary>
public sealed class CommandLoopTests
{
    private static readonly CommandState[] QueuedDeliveredSucceeded = [CommandState.Queued, CommandState.Delivered, CommandState.Succeeded];

    [Fact]
    public async Task A_command_for_an_offline_device_waits_then_goes_queued_delivered_succeeded()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var entry = await h.EnqueueAsync("d1");
        Assert.Equal(CommandState.Queued, h.StoredState(entry.Id));
        await h.Sink.WaitAsync(entry.Id, CommandState.Queued);
        await h.DrainAsync();
        Assert.Empty(h.Channel.Published);

        h.Connect("d1");
        await h.Channel.WaitForPublishedAsync(1);
        var (device, message, tag) = h.Channel.Published[0];
        Assert.Equal("d1", device);
        Assert.Equal("devices/d1/commands", message.Topic);
        Assert.Same(entry, tag);

        h.Acknowledge(entry);
        await h.Sink.WaitAsync(entry.Id, CommandState.Delivered);
        await h.ResultAsync(entry, "succeeded", "{\"echo\":\"blink\"}");

        // The result's PUBACK waited for the commit: the store has it now.
        var stored = h.Store.Find(entry.Id)!.Value;
        Assert.Equal(CommandState.Succeeded, stored.Entry.State);
        Assert.Equal("{\"echo\":\"blink\"}", stored.Entry.ResultJson);
        Assert.Equal(QueuedDeliveredSucceeded, h.StoredHistory(entry.Id));
        await h.Sink.WaitAsync(entry.Id, CommandState.Succeeded);
        Assert.Equal(QueuedDeliveredSucceeded, h.Sink.Transitions.Where(t => t.CommandId == entry.Id).Select(static t => t.State));
        Assert.Equal(1, h.Metrics.Transitions(CommandState.Succeeded));
        Assert.Empty(h.AnnouncedBeforeStored);
        Assert.Contains(h.Presence, static p => p.DeviceId == "d1" && p.Online);
    }

    [Fact]
    public async Task A_result_before_the_acknowledgement_still_reads_queued_delivered_final_and_the_late_ack_changes_nothing()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        await h.Channel.WaitForPublishedAsync(1);

        await h.ResultAsync(entry, "failed");
        h.Acknowledge(entry);
        await h.DrainAsync();

        Assert.Equal([CommandState.Queued, CommandState.Delivered, CommandState.Failed], h.StoredHistory(entry.Id));
        Assert.Equal(1, h.Metrics.Transitions(CommandState.Delivered));
        Assert.Empty(h.AnnouncedBeforeStored);
    }

    [Fact]
    public async Task Queued_commands_go_oldest_first_and_one_the_device_does_not_take_waits_for_the_sweep()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add((await h.EnqueueAsync("d2", "step" + i)).Id);
        }

        h.Channel.ConnectRefusing("d2");
        await h.DrainAsync();
        Assert.Empty(h.Channel.Published);

        // Now it takes them: the next sweep (the fake clock's next second) sends all three, in order.
        h.Channel.Connect("d2");
        h.Time.Advance(TimeSpan.FromSeconds(1));
        await h.Channel.WaitForPublishedAsync(3);
        Assert.Equal(ids, h.Channel.PublishedIds("d2"));
    }

    [Fact]
    public async Task The_sweep_expires_a_command_once_its_ttl_has_passed_on_the_clock()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var entry = await h.EnqueueAsync("d1", ttlSeconds: 5);

        // Online but refusing: every sweep tries to deliver, so each one shows as an attempt.
        h.Channel.ConnectRefusing("d1");
        var attempts = h.Channel.Attempts;
        h.Time.Advance(TimeSpan.FromSeconds(4));
        await h.Channel.WaitForAttemptsAsync(attempts + 1);
        await h.DrainAsync();
        Assert.Equal(CommandState.Queued, h.StoredState(entry.Id));

        h.Time.Advance(TimeSpan.FromSeconds(1));
        await h.Sink.WaitAsync(entry.Id, CommandState.Expired);
        Assert.Equal([CommandState.Queued, CommandState.Expired], h.StoredHistory(entry.Id));
        Assert.Empty(h.AnnouncedBeforeStored);

        // Expired: never sent, even to a device that takes commands again.
        h.Connect("d1");
        await h.DrainAsync();
        Assert.Empty(h.Channel.Published);
    }

    [Fact]
    public async Task A_waiter_wakes_when_the_final_transition_is_stored()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        await h.Channel.WaitForPublishedAsync(1);

        var wait = h.Commands.WaitForFinalAsync(entry.Id, TimeSpan.FromSeconds(30), CancellationToken.None);
        await h.DrainAsync();
        Assert.False(wait.IsCompleted);

        h.Acknowledge(entry);
        await h.Sink.WaitAsync(entry.Id, CommandState.Delivered);
        await h.DrainAsync();
        Assert.False(wait.IsCompleted);

        await h.ResultAsync(entry, "succeeded");
        Assert.Equal(CommandError.None, await wait.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(CommandState.Succeeded, h.StoredState(entry.Id));

        // Final: a new wait returns at once, and so does one for a command nobody knows.
        Assert.Equal(CommandError.None, await h.Commands.WaitForFinalAsync(entry.Id, TimeSpan.FromSeconds(30), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(CommandError.None, await h.Commands.WaitForFinalAsync("nobody", TimeSpan.FromSeconds(30), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task Waiters_are_bounded_and_one_that_times_out_on_the_clock_frees_its_place()
    {
        await using var h = await CommandLoopHarness.StartAsync(new PushOptions { MaxWaiters = 1 });
        var entry = await h.EnqueueAsync("d1");

        var first = h.Commands.WaitForFinalAsync(entry.Id, TimeSpan.FromSeconds(10), CancellationToken.None);
        Assert.Equal(CommandError.TooManyWaiters, await h.Commands.WaitForFinalAsync(entry.Id, TimeSpan.FromSeconds(10), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, h.Metrics.LimitHits(PushLimit.Waiters));
        Assert.False(first.IsCompleted);

        h.Time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(CommandError.None, await first.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(CommandState.Queued, h.StoredState(entry.Id));

        // Its place is free again: the next waiter is taken, and woken by the cancel that makes the command final.
        var second = h.Commands.WaitForFinalAsync(entry.Id, TimeSpan.FromSeconds(10), CancellationToken.None);
        await h.DrainAsync();
        Assert.False(second.IsCompleted);
        Assert.Equal(CommandError.None, await h.Commands.CancelAsync(entry.Id, CancellationToken.None));
        Assert.Equal(CommandError.None, await second.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(1, h.Metrics.LimitHits(PushLimit.Waiters));
    }

    [Fact]
    public async Task Only_a_command_not_yet_handed_to_the_connection_can_be_canceled_and_it_never_goes_out()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var canceled = await h.EnqueueAsync("d1", "never");
        var kept = await h.EnqueueAsync("d1", "kept");

        Assert.Equal(CommandError.None, await h.Commands.CancelAsync(canceled.Id, CancellationToken.None));
        Assert.Equal(CommandState.Canceled, h.StoredState(canceled.Id));
        await h.Sink.WaitAsync(canceled.Id, CommandState.Canceled);
        Assert.Equal(CommandError.NotCancelable, await h.Commands.CancelAsync(canceled.Id, CancellationToken.None));
        Assert.Equal(CommandError.UnknownCommand, await h.Commands.CancelAsync("0123456789abcdef", CancellationToken.None));

        h.Connect("d1");
        await h.Channel.WaitForPublishedAsync(1);
        await h.DrainAsync();
        Assert.Equal([kept.Id], h.Channel.PublishedIds("d1"));

        // On its way to the device (no acknowledgement yet): it may run, so it stays.
        Assert.Equal(CommandError.NotCancelable, await h.Commands.CancelAsync(kept.Id, CancellationToken.None));
        Assert.Equal(CommandState.Queued, h.StoredState(kept.Id));
        Assert.Empty(h.AnnouncedBeforeStored);
    }

    [Fact]
    public async Task A_lost_connection_gives_back_what_it_held_so_it_goes_again_on_the_next_one()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        await h.Channel.WaitForPublishedAsync(1);

        h.Disconnect("d1");
        h.Connect("d1");
        await h.Channel.WaitForPublishedAsync(2);
        await h.DrainAsync();
        Assert.Equal([entry.Id, entry.Id], h.Channel.PublishedIds("d1"));
        Assert.Equal([true, false, true], h.Presence.Select(static p => p.Online));
    }

    [Fact]
    public async Task A_full_queue_refuses_the_next_command_until_one_leaves_it()
    {
        await using var h = await CommandLoopHarness.StartAsync(new PushOptions { MaxQueuedCommandsPerDevice = 2 });
        var first = await h.EnqueueAsync("d1");
        await h.EnqueueAsync("d1");
        var (refused, error) = await h.Commands.EnqueueAsync("d1", CommandLoopHarness.Request(), CancellationToken.None);
        Assert.Null(refused);
        Assert.Equal(CommandError.TooManyQueued, error);
        Assert.Equal(1, h.Metrics.LimitHits(PushLimit.QueuedPerDevice));

        Assert.Equal(CommandError.None, await h.Commands.CancelAsync(first.Id, CancellationToken.None));
        await h.EnqueueAsync("d1");

        var (_, unknown) = await h.Commands.EnqueueAsync("nobody", CommandLoopHarness.Request(), CancellationToken.None);
        Assert.Equal(CommandError.UnknownDevice, unknown);
    }

    [Fact]
    public async Task A_broadcast_stores_one_command_per_device_with_the_tag_and_skips_a_full_queue()
    {
        await using var h = await CommandLoopHarness.StartAsync(new PushOptions { MaxQueuedCommandsPerDevice = 1 });
        await h.EnqueueAsync("d3");

        var (commands, skipped, error) = await h.Commands.BroadcastAsync("lobby", CommandLoopHarness.Request("lights-off"), CancellationToken.None);
        Assert.Equal(CommandError.None, error);
        Assert.Equal(["d1"], commands.Select(static c => c.Device));
        Assert.Equal(["d3"], skipped);
        Assert.Equal(CommandState.Queued, h.StoredState(commands[0].Id));

        h.Options.MaxBroadcastDevices = 1;
        var (none, _, refused) = await h.Commands.BroadcastAsync("lobby", CommandLoopHarness.Request("lights-off"), CancellationToken.None);
        Assert.Equal(CommandError.TooManyDevices, refused);
        Assert.Empty(none);
        Assert.Equal(1, h.Metrics.LimitHits(PushLimit.BroadcastDevices));
    }

    [Fact]
    public async Task Duplicate_unknown_and_malformed_results_are_counted_and_never_recorded()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        await h.Channel.WaitForPublishedAsync(1);
        await h.ResultAsync(entry, "succeeded");

        await h.ResultAsync(entry, "failed");
        Assert.Equal(1, h.Metrics.DuplicateResults);

        await h.PublishAsync("d1", "devices/d1/results", "{\"id\":\"0123456789abcdef\",\"status\":\"failed\"}");
        await h.PublishAsync("d1", "devices/d1/results", "not a result");

        // Another device's command named on d2's topic: not d2's, so unknown.
        await h.PublishAsync("d2", "devices/d2/results", $"{{\"id\":\"{entry.Id}\",\"status\":\"failed\"}}");
        Assert.Equal(3, h.Metrics.UnknownResults);

        // Not a results topic: none of the loop's business.
        await h.PublishAsync("d1", "devices/d1/telemetry", $"{{\"id\":\"{entry.Id}\",\"status\":\"failed\"}}");
        await h.DrainAsync();
        Assert.Equal(3, h.Metrics.UnknownResults);
        Assert.Equal(1, h.Metrics.DuplicateResults);
        Assert.Equal(QueuedDeliveredSucceeded, h.StoredHistory(entry.Id));
        Assert.Equal(1, h.Metrics.Transitions(CommandState.Succeeded));
        Assert.Equal(0, h.Metrics.Transitions(CommandState.Failed));
    }

    [Fact]
    public async Task Commands_not_final_are_reloaded_at_start_and_delivered_oldest_first()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-restart-").FullName;
        try
        {
            var ids = new List<string>();
            string done;
            await using (var before = await CommandLoopHarness.StartOnAsync(directory))
            {
                before.Connect("d3");
                var finished = await before.EnqueueAsync("d3", "done");
                await before.Channel.WaitForPublishedAsync(1);
                await before.ResultAsync(finished, "succeeded");
                done = finished.Id;
                before.Disconnect("d3");
                for (var i = 0; i < 3; i++)
                {
                    ids.Add((await before.EnqueueAsync("d3", "cmd" + i)).Id);
                }

                await before.DrainAsync();
            }

            await using var after = await CommandLoopHarness.StartOnAsync(directory);
            after.Connect("d3");
            await after.Channel.WaitForPublishedAsync(3);
            await after.DrainAsync();
            Assert.Equal(ids, after.Channel.PublishedIds("d3"));
            Assert.DoesNotContain(done, after.Channel.PublishedIds("d3"));

            // Reloaded commands take results like any other.
            var first = after.Channel.Published[0].Entry;
            await after.ResultAsync(first, "succeeded");
            Assert.Equal(QueuedDeliveredSucceeded, after.StoredHistory(first.Id));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_failed_commit_puts_memory_back_so_the_command_goes_again_and_nothing_is_announced()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        await h.Channel.WaitForPublishedAsync(1);
        await h.Sink.WaitAsync(entry.Id, CommandState.Queued);

        // From here every commit fails.
        await h.Store.DisposeAsync();
        h.Acknowledge(entry);

        // The cancel's commit fails too, and its caller sees why; once it has, the acknowledgement (posted
        // before it) has been handled.
        await Assert.ThrowsAsync<ObjectDisposedException>(() => h.Commands.CancelAsync(entry.Id, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30)));

        // Neither step was stored, so the command is queued again and not with the connection: the next
        // subscription sends it again.
        h.Observer.OnSubscribed("d1", "devices/d1/commands");
        await h.Channel.WaitForPublishedAsync(2);
        Assert.Equal([entry.Id, entry.Id], h.Channel.PublishedIds("d1"));
        Assert.DoesNotContain(h.Sink.Transitions, t => t.CommandId == entry.Id && t.State == CommandState.Delivered);
        Assert.Equal(0, h.Metrics.Transitions(CommandState.Delivered));
    }

    [Fact]
    public async Task Once_the_loop_has_stopped_broker_events_are_counted_as_dropped_and_a_cancel_is_busy()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var entry = await h.EnqueueAsync("d1");
        await h.Loop.StopAsync(CancellationToken.None);

        h.Observer.OnSubscribed("d1", "devices/d1/commands");
        h.Acknowledge(entry);
        Assert.Equal(2, h.Metrics.EventsDropped);

        // A result nobody can store is not acknowledged (review M3): the device sends it again later.
        Assert.False(await h.ResultAsync(entry, "succeeded"));
        Assert.Equal(3, h.Metrics.EventsDropped);
        Assert.Equal(1, h.Metrics.ResultsNotAcknowledged(ResultRefusal.Busy));
        Assert.Equal(CommandError.Busy, await h.Commands.CancelAsync(entry.Id, CancellationToken.None));
        Assert.Equal(CommandState.Queued, h.StoredState(entry.Id));
    }

    [Fact]
    public async Task A_tokens_queued_bytes_are_counted_until_final_and_recounted_from_the_store_at_start()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-quota-").FullName;
        try
        {
            // Each command: 1,000 payload bytes + 512 = 1,512; room for two (3,024), not three.
            var options = new PushOptions { MaxQueuedBytesPerToken = 4000 };
            var request = new CommandRequest("fill", System.Text.Encoding.UTF8.GetBytes("\"" + new string('a', 998) + "\""), false, 3600, 1, Token: "t1");
            CommandEntry first;
            await using (var h = await CommandLoopHarness.StartOnAsync(directory, options))
            {
                first = (await h.Commands.EnqueueAsync("d1", request, CancellationToken.None)).Entry!;
                Assert.Equal(CommandError.None, (await h.Commands.EnqueueAsync("d2", request, CancellationToken.None)).Error);
                Assert.Equal(CommandError.QuotaExceeded, (await h.Commands.EnqueueAsync("d3", request, CancellationToken.None)).Error);
                Assert.Equal(CommandError.None, (await h.Commands.EnqueueAsync("d3", request with { Token = "t2" }, CancellationToken.None)).Error);
                Assert.Equal(1, h.Metrics.LimitHits(PushLimit.QueuedBytesPerToken));

                // Delivered is not final: still counted.
                h.Connect("d1");
                await h.Channel.WaitForPublishedAsync(1);
                h.Acknowledge(first);
                await h.Sink.WaitAsync(first.Id, CommandState.Delivered);
                Assert.Equal(CommandError.QuotaExceeded, (await h.Commands.EnqueueAsync("d3", request, CancellationToken.None)).Error);
            }

            // A restart counts what the store holds: still full for t1 ...
            await using (var h = await CommandLoopHarness.StartOnAsync(directory, options))
            {
                Assert.Equal(CommandError.QuotaExceeded, (await h.Commands.EnqueueAsync("d3", request, CancellationToken.None)).Error);

                // ... until a command becomes final.
                h.Connect("d1");
                Assert.True(await h.ResultAsync(first, "succeeded"));
                Assert.Equal(CommandError.None, (await h.Commands.EnqueueAsync("d3", request, CancellationToken.None)).Error);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Commands_the_store_refuses_give_their_places_and_bytes_back()
    {
        await using var h = await CommandLoopHarness.StartAsync(new PushOptions { MaxQueuedBytesPerToken = 1000, MaxQueuedCommandsPerDevice = 1 });
        var request = CommandLoopHarness.Request() with { Token = "t1" };
        await using (await StoreFailure.InsertsAsync(h.DataDirectory))
        {
            await Assert.ThrowsAnyAsync<Exception>(() => h.Commands.EnqueueAsync("d1", request, CancellationToken.None));
        }

        // The place and the bytes held for the refused command are free again.
        Assert.Equal(CommandError.None, (await h.Commands.EnqueueAsync("d1", request, CancellationToken.None)).Error);
    }

    [Fact]
    public async Task A_deleted_devices_commands_end_queued_canceled_delivered_expired_and_their_bytes_go_back()
    {
        await using var h = await CommandLoopHarness.StartAsync(new PushOptions { MaxQueuedBytesPerToken = 2000 });
        var request = CommandLoopHarness.Request() with { Token = "t1" };
        h.Connect("d1");
        var delivered = (await h.Commands.EnqueueAsync("d1", request, CancellationToken.None)).Entry!;
        await h.Channel.WaitForPublishedAsync(1);
        h.Acknowledge(delivered);
        await h.Sink.WaitAsync(delivered.Id, CommandState.Delivered);
        h.Disconnect("d1");
        var queued = (await h.Commands.EnqueueAsync("d1", request, CancellationToken.None)).Entry!;
        var others = (await h.Commands.EnqueueAsync("d2", request, CancellationToken.None)).Entry!;
        Assert.Equal(CommandError.QuotaExceeded, (await h.Commands.EnqueueAsync("d3", request, CancellationToken.None)).Error);

        Assert.Equal(2, await h.Commands.EndCommandsOfAsync("d1", CancellationToken.None));
        Assert.Equal([CommandState.Queued, CommandState.Canceled], h.StoredHistory(queued.Id));
        Assert.Equal([CommandState.Queued, CommandState.Delivered, CommandState.Expired], h.StoredHistory(delivered.Id));
        Assert.Equal(CommandState.Queued, h.StoredState(others.Id));
        Assert.Empty(h.AnnouncedBeforeStored);

        // Their bytes are free; the device's id has nothing left (a result for the old command is unknown now).
        Assert.Equal(CommandError.None, (await h.Commands.EnqueueAsync("d3", request, CancellationToken.None)).Error);
        Assert.Equal(0, await h.Commands.EndCommandsOfAsync("d1", CancellationToken.None));
        Assert.True(await h.ResultAsync(delivered, "succeeded"));
        Assert.Equal(CommandState.Expired, h.StoredState(delivered.Id));
    }

    [Fact]
    public async Task A_result_whose_commit_fails_is_not_acknowledged_and_the_one_sent_again_is_recorded_once()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        await h.Channel.WaitForPublishedAsync(1);
        h.Acknowledge(entry);
        await h.Sink.WaitAsync(entry.Id, CommandState.Delivered);

        await using (await StoreFailure.FinalTransitionsAsync(h.DataDirectory))
        {
            Assert.False(await h.ResultAsync(entry, "succeeded"));
            Assert.Equal(CommandState.Delivered, h.StoredState(entry.Id));
        }

        Assert.True(await h.ResultAsync(entry, "succeeded"));
        Assert.Equal(QueuedDeliveredSucceeded, h.StoredHistory(entry.Id));
        Assert.Equal(1, h.Metrics.ResultsNotAcknowledged(ResultRefusal.NotStored));
        Assert.Equal(1, h.Metrics.Transitions(CommandState.Succeeded));
        Assert.Empty(h.AnnouncedBeforeStored);
    }

    [Fact]
    public async Task A_result_the_loop_does_not_commit_within_10_s_on_the_clock_is_not_acknowledged_and_counts_once_when_sent_again()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var entry = await h.EnqueueAsync("d1");
        var other = await h.EnqueueAsync("d2");
        await h.Channel.WaitForPublishedAsync(1);
        await h.Sink.WaitAsync(other.Id, CommandState.Queued);

        // The loop stalls in a sink while announcing the cancel of another command.
        using var hold = new SemaphoreSlim(0);
        h.Sink.Hold = hold;
        var cancel = h.Commands.CancelAsync(other.Id, CancellationToken.None);
        try
        {
            var result = h.ResultAsync(entry, "succeeded");
            h.Time.Advance(TimeSpan.FromSeconds(10));
            Assert.False(await result);
            Assert.Equal(1, h.Metrics.ResultsNotAcknowledged(ResultRefusal.Timeout));
        }
        finally
        {
            h.Sink.Hold = null;
            hold.Release(100);
        }

        Assert.Equal(CommandError.None, await cancel.WaitAsync(TimeSpan.FromSeconds(30)));

        // The late commit went through; the device's second send is a duplicate, recorded once.
        Assert.True(await h.ResultAsync(entry, "succeeded"));
        Assert.Equal(QueuedDeliveredSucceeded, h.StoredHistory(entry.Id));
        Assert.Equal(1, h.Metrics.DuplicateResults);
    }

    [Fact]
    public async Task A_command_with_a_notBefore_is_held_while_its_device_is_online_then_sent_and_its_ttl_counts_from_then()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        h.Connect("d1");
        var notBefore = h.Time.GetUtcNow().AddSeconds(30);
        var (held, error) = await h.Commands.EnqueueAsync("d1", CommandLoopHarness.Request("later", ttlSeconds: 60) with { NotBefore = notBefore }, CancellationToken.None);
        Assert.Equal(CommandError.None, error);
        var now = await h.EnqueueAsync("d1", "now");
        await h.Channel.WaitForPublishedAsync(1);
        Assert.Equal([now.Id], h.Channel.PublishedIds("d1"));
        Assert.Equal(notBefore, h.Store.Find(held!.Id)!.Value.Entry.NotBefore);
        Assert.Equal(notBefore.AddSeconds(60), held.ExpiresAt);

        // Sweeps before notBefore send nothing.
        h.Time.Advance(TimeSpan.FromSeconds(29));
        await h.DrainAsync();
        Assert.Single(h.Channel.Published);

        h.Time.Advance(TimeSpan.FromSeconds(1));
        await h.Channel.WaitForPublishedAsync(2);
        Assert.Equal([now.Id, held.Id], h.Channel.PublishedIds("d1"));
    }

    [Fact]
    public async Task A_held_command_can_be_canceled_and_survives_a_restart_still_held()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-").FullName;
        try
        {
            DateTimeOffset notBefore;
            string keep;
            await using (var h = await CommandLoopHarness.StartOnAsync(directory))
            {
                notBefore = h.Time.GetUtcNow().AddMinutes(10);
                var (cancel, _) = await h.Commands.EnqueueAsync("d1", CommandLoopHarness.Request() with { NotBefore = notBefore }, CancellationToken.None);
                var (held, _) = await h.Commands.EnqueueAsync("d1", CommandLoopHarness.Request() with { NotBefore = notBefore }, CancellationToken.None);
                keep = held!.Id;
                Assert.Equal(CommandError.None, await h.Commands.CancelAsync(cancel!.Id, CancellationToken.None));
            }

            await using (var h = await CommandLoopHarness.StartOnAsync(directory))
            {
                h.Time.SetUtcNow(notBefore.AddMinutes(-1));
                h.Connect("d1");
                await h.DrainAsync();
                Assert.Empty(h.Channel.Published);
                h.Time.Advance(TimeSpan.FromMinutes(1));
                await h.Channel.WaitForPublishedAsync(1);
                Assert.Equal([keep], h.Channel.PublishedIds("d1"));
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task An_enqueue_with_an_idempotency_key_stores_one_command_per_device_however_often_it_is_repeated()
    {
        await using var h = await CommandLoopHarness.StartAsync();
        var request = CommandLoopHarness.Request() with { IdempotencyKey = "run-1" };
        var (first, _) = await h.Commands.EnqueueAsync("d1", request, CancellationToken.None);
        var (again, _) = await h.Commands.EnqueueAsync("d1", request, CancellationToken.None);
        Assert.Equal(first!.Id, again!.Id);

        // A broadcast with the key: d1 has it already, d3 gets one; repeated, nothing new.
        var (sent, skipped, error) = await h.Commands.BroadcastAsync("lobby", request, CancellationToken.None);
        Assert.Equal(CommandError.None, error);
        Assert.Empty(skipped);
        Assert.Equal(["d1", "d3"], sent.Select(static c => c.Device).Order().ToArray());
        var (repeated, _, _) = await h.Commands.BroadcastAsync("lobby", request, CancellationToken.None);
        Assert.Equal(sent.Select(static c => c.Id).Order(), repeated.Select(static c => c.Id).Order());
        Assert.Single(h.Store.History("d1", null, 10));
        Assert.Single(h.Store.History("d3", null, 10));

        // Another key is another command.
        Assert.NotEqual(first.Id, (await h.Commands.EnqueueAsync("d1", request with { IdempotencyKey = "run-2" }, CancellationToken.None)).Entry!.Id);
    }
}
