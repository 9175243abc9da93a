using System.Net;
using System.Text;
using System.Text.Json;
using Relay.Server.Push.Commands;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's H4 (commands): a <c>push</c> token could queue 1,000 commands for each of 10,000
/// devices at 64 KiB each, all of it reloaded with its payload at the next start. Queued bytes are now
/// bounded per token (<c>Relay:Push:MaxQueuedBytesPerToken</c>, 429 beyond it), and the reload at start
/// reads metadata only: a payload is read when its command is about to be sent.
/// </summary>
public sealed class QueuedCommandQuotaTests
{
    // A 2,002-byte JSON payload; each command counts its payload plus 512 bytes for its row and entry.
    private static readonly string Payload = "\"" + new string('a', 2000) + "\"";

    [Fact]
    public async Task A_token_queues_at_most_its_byte_quota_then_gets_429_until_commands_finish()
    {
        // Room for three such commands (3 x 2,514 = 7,542 bytes), not four.
        await using var kit = await PushTestKit.StartAsync("Relay:Push:MaxQueuedBytesPerToken=8192");
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add(await PushTestKit.PushAsync(kit.Http, "d1", "fill", Payload));
        }

        using (var refused = await Post(kit.Http, "/v1/devices/d2/commands", $"{{\"name\":\"more\",\"payload\":{Payload}}}"))
        {
            Assert.Equal((HttpStatusCode)429, refused.StatusCode);
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
            Assert.Contains("Relay:Push:MaxQueuedBytesPerToken", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // A broadcast that would pass the quota is refused whole, not sent to some of the devices.
        foreach (var device in new[] { "d2", "d3" })
        {
            using var tagged = await kit.Http.PutAsync($"/v1/devices/{device}/tags", new StringContent("{\"tags\":[\"lobby\"]}", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, tagged.StatusCode);
        }

        using (var broadcast = await Post(kit.Http, "/v1/commands/broadcast", $"{{\"tag\":\"lobby\",\"name\":\"x\",\"payload\":{Payload}}}"))
        {
            Assert.Equal((HttpStatusCode)429, broadcast.StatusCode);
        }

        foreach (var device in new[] { "d2", "d3" })
        {
            Assert.Contains("\"commands\":[]", await kit.Http.GetStringAsync($"/v1/devices/{device}/commands"), StringComparison.Ordinal);
        }

        // Another token has a quota of its own.
        using (var created = await Post(kit.Http, "/v1/tokens", "{\"name\":\"other\",\"scopes\":[\"push\"]}"))
        {
            using var json = JsonDocument.Parse(await created.Content.ReadAsStringAsync());
            using var other = PushTestKit.Client(kit.Server.HttpPort, json.RootElement.GetProperty("token").GetString());
            await PushTestKit.PushAsync(other, "d2", "mine", Payload);
        }

        // A command that becomes final gives its bytes back.
        using (var cancel = await kit.Http.PostAsync($"/v1/commands/{ids[0]}/cancel", null))
        {
            Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        }

        await PushTestKit.PushAsync(kit.Http, "d2", "again", Payload);

        Assert.Contains("relay_push_limit_hits_total{limit=\"queued_bytes_per_token\"} 2\n", await kit.Http.GetStringAsync("/metrics"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task After_a_restart_commands_are_reloaded_without_payloads_and_each_payload_is_read_when_sent()
    {
        var directory = Directory.CreateTempSubdirectory("relay-commands-reload-").FullName;
        try
        {
            var ids = new List<string>();
            await using (var before = await CommandLoopHarness.StartOnAsync(directory))
            {
                for (var i = 0; i < 3; i++)
                {
                    var (entry, error) = await before.Commands.EnqueueAsync("d3", new CommandRequest("cmd" + i, Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"), false, 3600, 1), CancellationToken.None);
                    Assert.Equal(CommandError.None, error);
                    ids.Add(entry!.Id);
                }

                await before.DrainAsync();
            }

            await using var after = await CommandLoopHarness.StartOnAsync(directory);

            // What a start holds in memory per command: no payload.
            var reloaded = after.Store.LoadActive();
            Assert.Equal(3, reloaded.Count);
            Assert.All(reloaded, static e => Assert.Null(e.Payload));

            after.Connect("d3");
            await after.Channel.WaitForPublishedAsync(3);
            var sent = after.Channel.Published;
            Assert.Equal(ids, sent.Select(static p => p.Entry.Id));
            for (var i = 0; i < 3; i++)
            {
                using var body = JsonDocument.Parse(sent[i].Message.Payload);
                Assert.Equal(i, body.RootElement.GetProperty("payload").GetProperty("n").GetInt32());
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static Task<HttpResponseMessage> Post(HttpClient http, string path, string json) =>
        http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
}
