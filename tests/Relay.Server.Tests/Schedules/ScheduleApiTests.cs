using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Schedules;
using Relay.Server.Tests.Push.Commands;

namespace Relay.Server.Tests.Schedules;

/// <summary>
/// Schedules and held commands over the real API, received by a real device (paho, scripts/command_device.py):
/// each run is a normal command with its own id in the device's history.
/// </summary>
public sealed class ScheduleApiTests
{
    [Fact]
    public async Task A_command_with_notBefore_is_accepted_at_once_and_reaches_the_device_only_from_then()
    {
        await using var kit = await PushTestKit.StartAsync();
        // Far enough ahead that a slow first request on a loaded machine still arrives before it.
        var notBefore = DateTimeOffset.UtcNow.AddSeconds(8);
        var at = notBefore.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
        using var accepted = await PostAsync(kit.Http, "/v1/devices/d1/commands", $$"""{"name":"later","payload":{"n":1},"notBefore":"{{at}}"}""");
        Assert.Equal(HttpStatusCode.Accepted, accepted.StatusCode);
        var body = await JsonAsync(accepted);
        var id = body.GetProperty("id").GetString()!;
        Assert.Equal("queued", body.GetProperty("state").GetString());
        Assert.Equal(notBefore.ToUnixTimeMilliseconds(), body.GetProperty("notBefore").GetDateTimeOffset().ToUnixTimeMilliseconds());

        // The device is online before notBefore; the command reaches it, and was delivered no earlier.
        await using var device = PushTestKit.StartDevice(kit.Server.MqttPort, "d1", count: 1);
        Assert.Equal(0, await device.WaitForExitAsync("device"));
        Assert.Equal([id], PushTestKit.ReceivedIds(device));
        var command = await PushTestKit.GetAsync(kit.Http, id, wait: 30);
        Assert.Equal("succeeded", command.GetProperty("state").GetString());
        Assert.Equal(notBefore.ToUnixTimeMilliseconds(), command.GetProperty("notBefore").GetDateTimeOffset().ToUnixTimeMilliseconds());
        var delivered = command.GetProperty("transitions").EnumerateArray().First(static t => t.GetProperty("state").GetString() == "delivered");
        Assert.True(delivered.GetProperty("at").GetDateTimeOffset() >= notBefore, $"delivered at {delivered.GetProperty("at")}, before {at}");
        Assert.True(command.GetProperty("expiresAt").GetDateTimeOffset() >= notBefore.AddSeconds(3600).AddMilliseconds(-1));
    }

    [Theory]
    [InlineData("\"2026-05-01T14:30:00\"")]
    [InlineData("\"tomorrow\"")]
    [InlineData("1777777777")]
    [InlineData("\"2999-01-01T00:00:00Z\"")]
    public async Task A_notBefore_without_an_offset_or_too_far_ahead_is_refused(string notBefore)
    {
        await using var kit = await PushTestKit.StartAsync();
        using var response = await PostAsync(kit.Http, "/v1/devices/d1/commands", $$"""{"name":"later","notBefore":{{notBefore}}}""");
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("Bad notBefore", (await JsonAsync(response)).GetProperty("title").GetString());
    }

    [Fact]
    public async Task A_recurring_schedule_sends_each_run_as_its_own_command_to_a_real_device_and_can_be_paused_resumed_and_deleted()
    {
        await using var kit = await PushTestKit.StartAsync("Relay:Schedules:MinIntervalSeconds=1");
        using var created = await PostAsync(kit.Http, "/v1/schedules", """{"name":"ping d1","device":"d1","every":"1s","command":{"name":"ping","payload":{"n":1}}}""");
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var schedule = await JsonAsync(created);
        var id = schedule.GetProperty("id").GetString()!;
        Assert.Equal("/v1/schedules/" + id, created.Headers.Location?.OriginalString);
        Assert.Equal("1s", schedule.GetProperty("every").GetString());
        Assert.Equal("ping", schedule.GetProperty("command").GetProperty("name").GetString());
        Assert.False(schedule.GetProperty("paused").GetBoolean());

        await using (var device = PushTestKit.StartDevice(kit.Server.MqttPort, "d1", count: 3))
        {
            Assert.Equal(0, await device.WaitForExitAsync("device"));
            // Runs queued while it connected may arrive as it answers its third and exits: at least three, each once.
            var ids = PushTestKit.ReceivedIds(device);
            Assert.True(ids.Count >= 3, string.Join(",", ids));
            Assert.Equal(ids.Count, ids.Distinct().Count());
            foreach (var commandId in ids)
            {
                var command = await PushTestKit.GetAsync(kit.Http, commandId, wait: 30);
                Assert.Equal("ping", command.GetProperty("name").GetString());
                Assert.Equal("succeeded", command.GetProperty("state").GetString());
            }
        }

        using (var paused = await kit.Http.PostAsync($"/v1/schedules/{id}/pause", null))
        {
            Assert.Equal(HttpStatusCode.OK, paused.StatusCode);
            var body = await JsonAsync(paused);
            Assert.True(body.GetProperty("paused").GetBoolean());
            Assert.False(body.TryGetProperty("nextRunAt", out _));
        }

        // Resumed, it runs again.
        var runs = (await GetJsonAsync(kit.Http, "/v1/schedules/" + id)).GetProperty("runs").GetInt64();
        Assert.True(runs >= 3);
        using (var resumed = await kit.Http.PostAsync($"/v1/schedules/{id}/resume", null))
        {
            Assert.Equal(HttpStatusCode.OK, resumed.StatusCode);
            Assert.True((await JsonAsync(resumed)).TryGetProperty("nextRunAt", out _));
        }

        await Poll.UntilAsync(async () => (await GetJsonAsync(kit.Http, "/v1/schedules/" + id)).GetProperty("runs").GetInt64() > runs, "a run after resume");

        var list = await GetJsonAsync(kit.Http, "/v1/schedules?device=d1");
        Assert.Equal(id, Assert.Single(list.GetProperty("schedules").EnumerateArray()).GetProperty("id").GetString());
        Assert.Empty((await GetJsonAsync(kit.Http, "/v1/schedules?tag=lobby")).GetProperty("schedules").EnumerateArray());

        using (var deleted = await kit.Http.DeleteAsync("/v1/schedules/" + id))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        using (var gone = await kit.Http.GetAsync("/v1/schedules/" + id))
        {
            Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        }

        // Every run is a normal command in the device's history.
        var history = await GetJsonAsync(kit.Http, "/v1/devices/d1/commands?limit=500");
        Assert.True(history.GetProperty("commands").EnumerateArray().Count(static c => c.GetProperty("name").GetString() == "ping") > runs);
        var metrics = kit.Server.Services.GetRequiredService<ScheduleMetrics>();
        Assert.True(metrics.Runs > runs);
        Assert.Equal(metrics.Runs, metrics.Commands);
    }

    [Fact]
    public async Task Schedules_are_checked_for_form_limits_and_scope()
    {
        await using var kit = await PushTestKit.StartAsync("Relay:Schedules:MinIntervalSeconds=120", "Relay:Schedules:MaxSchedulesPerTarget=2");
        async Task<(HttpStatusCode Status, string Title)> Create(string json)
        {
            using var response = await PostAsync(kit.Http, "/v1/schedules", json);
            var body = await JsonAsync(response);
            return (response.StatusCode, body.TryGetProperty("title", out var title) ? title.GetString()! : string.Empty);
        }

        Assert.Equal((HttpStatusCode.BadRequest, "Bad target"), await Create("""{"device":"d1","tag":"x","every":"1m","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad target"), await Create("""{"every":"1m","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad timing"), await Create("""{"device":"d1","every":"1m","cron":"* * * * *","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad timing"), await Create("""{"device":"d1","every":"1m","timeZone":"UTC","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad every"), await Create("""{"device":"d1","every":"1d","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad timing"), await Create("""{"device":"d1","cron":"61 * * * *","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad timing"), await Create("""{"device":"d1","cron":"0 * * * *","timeZone":"../../etc/passwd","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad command"), await Create("""{"device":"d1","every":"1m"}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Bad notBefore"), await Create("""{"device":"d1","every":"1m","command":{"name":"a","notBefore":"2030-01-01T00:00:00Z"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Too frequent"), await Create("""{"device":"d1","every":"1m","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.BadRequest, "Too frequent"), await Create("""{"device":"d1","cron":"* 9 * * *","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.NotFound, "Unknown device"), await Create("""{"device":"nobody","every":"2m","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.Created, string.Empty), await Create("""{"device":"d1","every":"2m","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.Created, string.Empty), await Create("""{"device":"d1","cron":"30 14 * * *","timeZone":"Europe/Berlin","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.Conflict, "Too many schedules"), await Create("""{"device":"d1","every":"3m","command":{"name":"a"}}"""));
        Assert.Equal((HttpStatusCode.Created, string.Empty), await Create("""{"tag":"d1","every":"2m","command":{"name":"a"}}"""));
        var metrics = kit.Server.Services.GetRequiredService<ScheduleMetrics>();
        Assert.Equal(1, metrics.LimitHits(ScheduleLimit.PerTarget));
        Assert.Equal(2, metrics.LimitHits(ScheduleLimit.MinInterval));

        // A read token may list, not create; no token, nothing.
        using var tokenResponse = await PostAsync(kit.Http, "/v1/tokens", """{"name":"reader","scopes":["read"]}""");
        var reader = (await JsonAsync(tokenResponse)).GetProperty("token").GetString()!;
        using var readHttp = PushTestKit.Client(kit.Server.HttpPort, reader);
        Assert.Equal(3, (await GetJsonAsync(readHttp, "/v1/schedules")).GetProperty("schedules").GetArrayLength());
        using (var denied = await PostAsync(readHttp, "/v1/schedules", """{"device":"d2","every":"2m","command":{"name":"a"}}"""))
        {
            Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        }

        using var anonymous = PushTestKit.Client(kit.Server.HttpPort, null);
        using (var unauthorized = await anonymous.GetAsync("/v1/schedules"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        }

        // Pages: two per page, then the rest.
        var first = await GetJsonAsync(kit.Http, "/v1/schedules?limit=2");
        Assert.Equal(2, first.GetProperty("schedules").GetArrayLength());
        var next = first.GetProperty("next").GetString();
        Assert.Single((await GetJsonAsync(kit.Http, $"/v1/schedules?limit=2&after={next}")).GetProperty("schedules").EnumerateArray());
    }

    internal static Task<HttpResponseMessage> PostAsync(HttpClient http, string path, string json) =>
        http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));

    internal static async Task<JsonElement> JsonAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        using var document = JsonDocument.Parse(text.Length == 0 ? "{}" : text);
        return document.RootElement.Clone();
    }

    internal static async Task<JsonElement> GetJsonAsync(HttpClient http, string path)
    {
        using var response = await http.GetAsync(path);
        Assert.True(response.IsSuccessStatusCode, $"{path}: {(int)response.StatusCode}");
        return await JsonAsync(response);
    }
}
