using Microsoft.Extensions.DependencyInjection;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>Every refusal of the command endpoints is RFC 7807 problem+json with a status a client can act on.</summary>
public sealed class CommandErrorTests
{
    [Fact]
    public async Task Refusals_are_problem_json_with_the_right_status()
    {
        await using var kit = await PushTestKit.StartAsync("Relay:Push:MaxQueuedCommandsPerDevice=2", "Relay:Push:MaxPayloadBytes=1024");

        async Task Expect(HttpStatusCode status, HttpResponseMessage response)
        {
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            using var problem = JsonDocument.Parse(text);
            Assert.Equal((int)status, problem.RootElement.GetProperty("status").GetInt32());
            Assert.False(string.IsNullOrWhiteSpace(problem.RootElement.GetProperty("detail").GetString()));
            response.Dispose();
        }

        StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

        // 401: no token, wrong token.
        using (var anonymous = PushTestKit.Client(kit.Server.HttpPort, null))
        {
            await Expect(HttpStatusCode.Unauthorized, await anonymous.PostAsync("/v1/devices/d1/commands", Json("{\"name\":\"x\"}")));
        }

        using (var wrong = PushTestKit.Client(kit.Server.HttpPort, "not-the-token"))
        {
            await Expect(HttpStatusCode.Unauthorized, await wrong.GetAsync("/v1/commands/abc"));
        }

        // 400: bad JSON and bad fields.
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("{\"name\":")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("[1,2]")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("{\"payload\":1}")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("{\"name\":\"x\",\"qos\":0}")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("{\"name\":\"x\",\"ttlSeconds\":0}")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("{\"name\":\"x\",\"payload\":{\"base64\":\"***\"}}")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.PostAsync("/v1/commands/broadcast", Json("{\"name\":\"x\"}")));
        await Expect(HttpStatusCode.BadRequest, await kit.Http.GetAsync("/v1/commands/abc?wait=61"));

        // 404: unknown device, unknown command.
        await Expect(HttpStatusCode.NotFound, await kit.Http.PostAsync("/v1/devices/nobody/commands", Json("{\"name\":\"x\"}")));
        await Expect(HttpStatusCode.NotFound, await kit.Http.GetAsync("/v1/commands/0123456789abcdef"));
        await Expect(HttpStatusCode.NotFound, await kit.Http.PostAsync("/v1/commands/0123456789abcdef/cancel", null));
        await Expect(HttpStatusCode.NotFound, await kit.Http.GetAsync("/v1/devices/nobody/commands"));

        // 413: payload over Relay:Push:MaxPayloadBytes, as JSON and as base64 bytes.
        await Expect(HttpStatusCode.RequestEntityTooLarge, await kit.Http.PostAsync("/v1/devices/d1/commands", Json($"{{\"name\":\"x\",\"payload\":\"{new string('a', 1100)}\"}}")));
        await Expect(HttpStatusCode.RequestEntityTooLarge, await kit.Http.PostAsync("/v1/devices/d1/commands", Json($"{{\"name\":\"x\",\"payload\":{{\"base64\":\"{Convert.ToBase64String(new byte[1025])}\"}}}}")));

        // 429: the device's queue is full (Relay:Push:MaxQueuedCommandsPerDevice=2); 409: a canceled command again.
        var first = await PushTestKit.PushAsync(kit.Http, "d1", "a");
        await PushTestKit.PushAsync(kit.Http, "d1", "b");
        await Expect(HttpStatusCode.TooManyRequests, await kit.Http.PostAsync("/v1/devices/d1/commands", Json("{\"name\":\"c\"}")));
        using (var cancel = await kit.Http.PostAsync($"/v1/commands/{first}/cancel", null))
        {
            Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        }

        await Expect(HttpStatusCode.Conflict, await kit.Http.PostAsync($"/v1/commands/{first}/cancel", null));

        // The canceled one freed a place.
        await PushTestKit.PushAsync(kit.Http, "d1", "c");

        // Each refusal by a limit is counted (and on /metrics).
        var metrics = kit.Server.Services.GetRequiredService<Relay.Server.Push.Commands.PushMetrics>();
        Assert.Equal(2, metrics.LimitHits(Relay.Server.Push.Commands.PushLimit.PayloadSize));
        Assert.Equal(1, metrics.LimitHits(Relay.Server.Push.Commands.PushLimit.QueuedPerDevice));
        Assert.Contains("relay_push_limit_hits_total{limit=\"queued_per_device\"} 1\n", await kit.Http.GetStringAsync("/metrics"), StringComparison.Ordinal);
    }
}
