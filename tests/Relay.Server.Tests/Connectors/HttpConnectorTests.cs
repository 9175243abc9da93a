using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Relay.Server.Connectors;
using static Relay.Server.Tests.Connectors.ConnectorTestKit;

namespace Relay.Server.Tests.Connectors;

/// <summary>The HTTP sink against a real Kestrel receiver in the test.</summary>
public sealed class HttpConnectorTests
{
    [Fact]
    public async Task Batches_ArePostedAsJsonArrays_WithTheBearerToken()
    {
        await using var receiver = await SinkReceiver.StartAsync(static _ => 200);
        await using var server = await StartAsync("Http", $"Url={receiver.Url}", "BearerToken=sink-token-42");
        await PublishAsync(server, "devices/d1/telemetry", ["one", "two", "three"]);

        var messages = await receiver.WaitForMessagesAsync(3, server);
        Assert.Equal(["one", "two", "three"], messages.Select(static m => Encoding.UTF8.GetString(m.GetProperty("payload").GetBytesFromBase64())));
        Assert.All(messages, static m =>
        {
            Assert.Equal(Device, m.GetProperty("clientId").GetString());
            Assert.Equal("devices/d1/telemetry", m.GetProperty("topic").GetString());
            Assert.Equal(1, m.GetProperty("qos").GetInt32());
            Assert.False(m.GetProperty("retain").GetBoolean());
            Assert.InRange(m.GetProperty("receivedAt").GetDateTimeOffset(), DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMinutes(1));
        });
        Assert.All(receiver.Requests, static r =>
        {
            Assert.Equal("Bearer sink-token-42", r.Authorization);
            Assert.Equal("application/json", r.ContentType);
        });
    }

    [Fact]
    public async Task ReceiverFailing_ThenBack_NothingIsLost_InOrder()
    {
        var healthy = false;
        await using var receiver = await SinkReceiver.StartAsync(_ => Volatile.Read(ref healthy) ? 200 : 503);
        await using var server = await StartAsync("Http", [$"Url={receiver.Url}", .. QuickBackoff]);
        var sent = Numbered("m", 25);
        await PublishAsync(server, "devices/d1/telemetry", sent);
        await Poll.UntilAsync(() => Counters(server).SpillMessages(0) == 25, "the 25 messages spilled while the receiver answers 503", describe: () => Task.FromResult(Describe(server)));
        Assert.False(Counters(server).Up(0));

        Volatile.Write(ref healthy, true);
        var messages = await receiver.WaitForMessagesAsync(25, server, accepted: true);
        Assert.Equal(sent, messages.Select(static m => Encoding.UTF8.GetString(m.GetProperty("payload").GetBytesFromBase64())));
        Assert.Equal(0, Counters(server).DroppedTotal(0));
        Assert.True(Counters(server).Retries(0) > 0);
    }

    [Fact]
    public async Task ReceiverRefusing_IsNotRetried_AndTheDropsAreCountedAsRejected()
    {
        await using var receiver = await SinkReceiver.StartAsync(static _ => 400);
        await using var server = await StartAsync("Http", [$"Url={receiver.Url}", .. QuickBackoff]);
        await PublishAsync(server, "devices/d1/telemetry", Numbered("r", 5));

        await Poll.UntilAsync(() => Counters(server).Dropped(0, ConnectorDropReason.Rejected) == 5, "5 messages dropped as rejected", describe: () => Task.FromResult(Describe(server)));
        Assert.Equal(0, Counters(server).Retries(0));
        Assert.Equal(0, Counters(server).Delivered(0));
        Assert.Equal(5, receiver.Requests.Sum(static r => r.Messages.Count));
    }

    private sealed record SinkRequest(string? Authorization, string? ContentType, int Status, IReadOnlyList<JsonElement> Messages);

    /// <summary>A real Kestrel on loopback that records every POST and answers with the status the test chooses.</summary>
    private sealed class SinkReceiver : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly List<SinkRequest> _all = [];

        private SinkReceiver(WebApplication app, string url)
        {
            _app = app;
            Url = url;
        }

        public string Url { get; }

        public IReadOnlyList<SinkRequest> Requests
        {
            get
            {
                lock (_all)
                {
                    return [.. _all];
                }
            }
        }

        public static async Task<SinkReceiver> StartAsync(Func<HttpContext, int> status)
        {
            var port = FreePorts.Tcp();
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
            var app = builder.Build();
            var receiver = new SinkReceiver(app, $"http://127.0.0.1:{port}/sink");
            app.MapPost("/sink", async (HttpContext http) =>
            {
                using var body = await JsonDocument.ParseAsync(http.Request.Body);
                var code = status(http);
                var request = new SinkRequest(http.Request.Headers.Authorization.ToString(), http.Request.ContentType, code, [.. body.RootElement.EnumerateArray().Select(static e => e.Clone())]);
                lock (receiver._all)
                {
                    receiver._all.Add(request);
                }

                return Results.StatusCode(code);
            });
            await app.StartAsync();
            return receiver;
        }

        /// <summary>Waits until the POSTs (only those answered 2xx when <paramref name="accepted"/>) carried <paramref name="count"/> messages.</summary>
        public async Task<List<JsonElement>> WaitForMessagesAsync(int count, RelayTestServer server, bool accepted = false)
        {
            List<JsonElement> messages = [];
            await Poll.UntilAsync(
                () =>
                {
                    messages = [.. Requests.Where(r => !accepted || r.Status is >= 200 and < 300).SelectMany(static r => r.Messages)];
                    return messages.Count >= count;
                },
                $"{count} messages POSTed",
                TimeSpan.FromSeconds(60),
                TimeSpan.FromMilliseconds(20),
                () => Task.FromResult($"{messages.Count} messages; {Describe(server)}"));
            Assert.Equal(count, messages.Count);
            return messages;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
