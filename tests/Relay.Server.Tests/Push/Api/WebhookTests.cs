using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging;
using Relay.Server.Devices;
using Relay.Server.Push.Webhooks;
using Relay.Server.Hosting;
using Relay.Server.Push;

namespace Relay.Server.Tests.Push.Api;

public sealed class WebhookTests
{
    private const string Secret = "shh-webhook-secret";

    private static readonly CommandTransition Succeeded = new("cmd-1", "sensor-1", "blink", CommandState.Succeeded, DateTimeOffset.FromUnixTimeSeconds(1_700_000_000), """{"led":"on"}""");

    private static WebhookOptions Options(WebhookReceiver receiver, int maxAttempts = 3, int queueCapacity = 100) => new()
    {
        Url = receiver.Url,
        Secret = Secret,
        MaxAttempts = maxAttempts,
        InitialBackoffMilliseconds = 1,
        QueueCapacity = queueCapacity,
    };

    private static async Task<(WebhookDispatcher Dispatcher, WebhookMetrics Metrics)> StartDispatcher(params WebhookOptions[] webhooks)
    {
        var metrics = new WebhookMetrics(webhooks.Length);
        var dispatcher = new WebhookDispatcher(webhooks, metrics, NullLogger.Instance, TimeProvider.System);
        await dispatcher.StartAsync(CancellationToken.None);
        return (dispatcher, metrics);
    }

    [Fact]
    public async Task Delivery_IsSignedWithTimestampAndHmac_AndCarriesTheEvent()
    {
        await using var receiver = await WebhookReceiver.StartAsync(_ => 200);
        var (dispatcher, metrics) = await StartDispatcher(Options(receiver));
        using (dispatcher)
        {
            dispatcher.OnCommandTransition(Succeeded);
            var request = await receiver.NextAsync();

            // What a receiver does: HMAC-SHA256(secret, timestamp + "." + raw body), constant-time compare.
            var expected = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(request.Timestamp + "." + request.Body)));
            Assert.True(CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), Encoding.ASCII.GetBytes(request.Signature)));
            Assert.InRange(long.Parse(request.Timestamp, System.Globalization.CultureInfo.InvariantCulture), DateTimeOffset.UtcNow.AddMinutes(-5).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.AddMinutes(5).ToUnixTimeSeconds());

            var json = JsonDocument.Parse(request.Body).RootElement;
            Assert.Equal("command", json.GetProperty("type").GetString());
            Assert.Equal(Succeeded.At, json.GetProperty("at").GetDateTimeOffset());
            var data = json.GetProperty("data");
            Assert.Equal("cmd-1", data.GetProperty("commandId").GetString());
            Assert.Equal("sensor-1", data.GetProperty("deviceId").GetString());
            Assert.Equal("succeeded", data.GetProperty("state").GetString());
            Assert.Equal("on", data.GetProperty("result").GetProperty("led").GetString());
            Assert.Equal(json.GetProperty("id").GetString(), request.EventId);

            // A tampered body does not verify.
            var forged = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(request.Timestamp + "." + request.Body.Replace("succeeded", "failed", StringComparison.Ordinal))));
            Assert.NotEqual(forged, request.Signature);

            await Poll.UntilAsync(() => metrics.Delivered(0) == 1, "the delivery to be counted");
            await dispatcher.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task A500_IsRetried_WithTheSameEvent()
    {
        var calls = 0;
        await using var receiver = await WebhookReceiver.StartAsync(_ => Interlocked.Increment(ref calls) == 1 ? 500 : 204);
        var (dispatcher, metrics) = await StartDispatcher(Options(receiver));
        using (dispatcher)
        {
            dispatcher.OnPresenceChanged(new DevicePresence("sensor-1", true, DateTimeOffset.UtcNow, new IPEndPoint(IPAddress.Loopback, 4000), 5, DateTimeOffset.UtcNow));
            var first = await receiver.NextAsync();
            var second = await receiver.NextAsync();
            Assert.Equal(first.EventId, second.EventId);
            Assert.Equal(first.Body, second.Body);
            var data = JsonDocument.Parse(second.Body).RootElement.GetProperty("data");
            Assert.True(data.GetProperty("online").GetBoolean());
            Assert.Equal("127.0.0.1:4000", data.GetProperty("remoteAddress").GetString());
            Assert.Equal(5, data.GetProperty("protocolVersion").GetInt32());

            await Poll.UntilAsync(() => metrics.Delivered(0) == 1, "the retried delivery to be counted");
            Assert.Equal(1, metrics.FailedAttempts(0));
            Assert.Equal(0, metrics.GivenUp(0));
            await dispatcher.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task AlwaysFailing_GivesUpAfterMaxAttempts_AndCountsIt()
    {
        await using var receiver = await WebhookReceiver.StartAsync(_ => 503);
        var (dispatcher, metrics) = await StartDispatcher(Options(receiver, maxAttempts: 4));
        using (dispatcher)
        {
            dispatcher.OnCommandTransition(Succeeded);
            await Poll.UntilAsync(() => metrics.GivenUp(0) == 1, "the event to be given up");
            Assert.Equal(4, metrics.FailedAttempts(0));
            Assert.Equal(0, metrics.Delivered(0));
            Assert.Equal(4, receiver.Received);

            // The next event is still delivered to (and failed by) the receiver: giving up does not stop the loop.
            dispatcher.OnCommandTransition(Succeeded with { CommandId = "cmd-2" });
            await Poll.UntilAsync(() => metrics.GivenUp(0) == 2, "the second event to be given up");
            Assert.Equal(8, receiver.Received);
            await dispatcher.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task FullQueue_DropsAndCounts_WithoutBlockingTheCaller()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var receiver = await WebhookReceiver.StartAsync(async _ =>
        {
            await release.Task;
            return 200;
        });
        var (dispatcher, metrics) = await StartDispatcher(Options(receiver, queueCapacity: 1));
        using (dispatcher)
        {
            dispatcher.OnCommandTransition(Succeeded);
            await receiver.NextAsync(); // the loop holds event 1 (its POST is parked), the queue is empty
            dispatcher.OnCommandTransition(Succeeded with { CommandId = "cmd-2" }); // fills the queue
            dispatcher.OnCommandTransition(Succeeded with { CommandId = "cmd-3" }); // dropped
            Assert.Equal(1, metrics.Dropped(0));
            release.SetResult();
            var second = await receiver.NextAsync();
            Assert.Contains("cmd-2", second.Body, StringComparison.Ordinal);
            await Poll.UntilAsync(() => metrics.Delivered(0) == 2, "both queued events to be delivered");
            await dispatcher.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task Server_ConfiguredWebhooks_FilterByEvents_AndExportMetrics()
    {
        await using var commands = await WebhookReceiver.StartAsync(_ => 200);
        await using var presence = await WebhookReceiver.StartAsync(_ => 200);
        await using var server = await DeviceApiTests.StartAsync(
            $"Relay:Webhooks:0:Url={commands.Url}",
            $"Relay:Webhooks:0:Secret={Secret}",
            "Relay:Webhooks:0:Events:0=command",
            $"Relay:Webhooks:1:Url={presence.Url}",
            $"Relay:Webhooks:1:Secret={Secret}",
            "Relay:Webhooks:1:Events:0=presence");
        var sink = server.Services.GetRequiredService<IPushEventSink>();
        sink.OnPresenceChanged(new DevicePresence("sensor-1", false, DateTimeOffset.UtcNow, null, 4, null));
        sink.OnCommandTransition(Succeeded);
        Assert.Equal("command", JsonDocument.Parse((await commands.NextAsync()).Body).RootElement.GetProperty("type").GetString());
        Assert.Equal("presence", JsonDocument.Parse((await presence.NextAsync()).Body).RootElement.GetProperty("type").GetString());

        var metrics = server.Services.GetRequiredService<WebhookMetrics>();
        await Poll.UntilAsync(() => metrics.Delivered(0) == 1 && metrics.Delivered(1) == 1, "both deliveries to be counted");
        Assert.Equal(1, commands.Received);
        Assert.Equal(1, presence.Received);
        using var http = DeviceApiTests.Client(server, token: null);
        var text = await http.GetStringAsync("/metrics");
        Assert.Contains("relay_webhook_delivered_total{webhook=\"0\"} 1", text, StringComparison.Ordinal);
        Assert.Contains("relay_webhook_given_up_total{webhook=\"1\"} 0", text, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(302)]
    [InlineData(307)]
    public async Task A_redirect_is_a_failed_delivery_and_is_never_followed(int status)
    {
        // Review L4: the client followed redirects, so a receiver (or whoever sits on its path) could bounce
        // the signed POST to loopback or a metadata address. The bounce target here is on loopback and must
        // never see a request.
        await using var target = await TestHttpServer.StartAsync(static _ => Task.CompletedTask);
        await using var bouncer = await TestHttpServer.StartAsync(http =>
        {
            http.Response.StatusCode = status;
            http.Response.Headers.Location = target.Url + "/metadata";
            return Task.CompletedTask;
        });
        var logger = new Relay.Server.Tests.Mqtt.Identity.TestLogger();
        var metrics = new WebhookMetrics(1);
        using var dispatcher = new WebhookDispatcher([new WebhookOptions { Url = bouncer.Url + "/hook", Secret = Secret, MaxAttempts = 2, InitialBackoffMilliseconds = 1 }], metrics, logger, TimeProvider.System);
        await dispatcher.StartAsync(CancellationToken.None);

        dispatcher.OnCommandTransition(Succeeded);
        await Poll.UntilAsync(() => metrics.GivenUp(0) == 1, "the redirected event to be given up");
        await dispatcher.StopAsync(CancellationToken.None);
        Assert.Equal(2, bouncer.Requests);
        Assert.Equal(0, target.Requests);
        Assert.Equal(0, metrics.Delivered(0));
        Assert.Contains(logger.Entries, e => e.Message.Contains($"HTTP {status}", StringComparison.Ordinal) && e.Message.Contains("not followed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_receiver_url_is_logged_without_its_user_info_or_query()
    {
        // Review L2: webhook URLs were logged whole, with credentials in the user info or the query.
        await using var receiver = await TestHttpServer.StartAsync(static http =>
        {
            http.Response.StatusCode = 503;
            return Task.CompletedTask;
        });
        var logger = new Relay.Server.Tests.Mqtt.Identity.TestLogger();
        var metrics = new WebhookMetrics(1);
        var url = receiver.Url.Replace("http://", "http://hook-user:hook-pa55word@", StringComparison.Ordinal) + "/hook?token=t0ken-value";
        using var dispatcher = new WebhookDispatcher([new WebhookOptions { Url = url, Secret = Secret, MaxAttempts = 2, InitialBackoffMilliseconds = 1 }], metrics, logger, TimeProvider.System);
        await dispatcher.StartAsync(CancellationToken.None);

        dispatcher.OnCommandTransition(Succeeded);
        await Poll.UntilAsync(() => metrics.GivenUp(0) == 1, "the event to be given up");
        await dispatcher.StopAsync(CancellationToken.None);
        var lines = logger.Entries.Select(static e => e.Message).ToList();
        Assert.Equal(2, lines.Count);
        Assert.All(lines, l => Assert.Contains(receiver.Url.Replace("http://", string.Empty, StringComparison.Ordinal) + "/hook", l, StringComparison.Ordinal));
        Assert.DoesNotContain(lines, static l => l.Contains("t0ken-value", StringComparison.Ordinal) || l.Contains("hook-pa55word", StringComparison.Ordinal) || l.Contains("hook-user", StringComparison.Ordinal));
    }

    [Fact]
    public void BadConfiguration_IsRefusedWithTheKey()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Relay:Webhooks:0:Url"] = "ftp://x",
            ["Relay:Webhooks:0:Events:0"] = "everything",
            ["Relay:Webhooks:0:MaxAttempts"] = "0",
        }).Build();
        using var provider = new ServiceCollection().AddPushWebhooks(configuration).BuildServiceProvider();
        var e = Assert.Throws<Relay.Server.Hosting.RelayConfigurationException>(provider.ValidateRelayConfiguration);
        Assert.Contains("Relay:Webhooks:0:Url", e.Message, StringComparison.Ordinal);
        Assert.Contains("Relay:Webhooks:0:Secret", e.Message, StringComparison.Ordinal);
        Assert.Contains("'everything'", e.Message, StringComparison.Ordinal);
        Assert.Contains("Relay:Webhooks:0:MaxAttempts", e.Message, StringComparison.Ordinal);
    }
}

/// <summary>A real local Kestrel that records each POST and answers with the status the test chooses.</summary>
internal sealed class WebhookReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Channel<ReceivedWebhook> _received = Channel.CreateUnbounded<ReceivedWebhook>();
    private int _count;

    private WebhookReceiver(WebApplication app, string url)
    {
        _app = app;
        Url = url;
    }

    public string Url { get; }

    public int Received => Volatile.Read(ref _count);

    public static Task<WebhookReceiver> StartAsync(Func<ReceivedWebhook, int> status) => StartAsync(r => Task.FromResult(status(r)));

    public static async Task<WebhookReceiver> StartAsync(Func<ReceivedWebhook, Task<int>> status)
    {
        var port = FreePorts.Tcp();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
        var app = builder.Build();
        var receiver = new WebhookReceiver(app, $"http://127.0.0.1:{port}/hook");
        app.MapPost("/hook", async (HttpContext http) =>
        {
            using var reader = new StreamReader(http.Request.Body, Encoding.UTF8);
            var request = new ReceivedWebhook(
                await reader.ReadToEndAsync(),
                http.Request.Headers["X-Relay-Timestamp"].ToString(),
                http.Request.Headers["X-Relay-Signature"].ToString(),
                http.Request.Headers["X-Relay-Event-Id"].ToString());
            Interlocked.Increment(ref receiver._count);
            receiver._received.Writer.TryWrite(request);
            return Results.StatusCode(await status(request));
        });
        await app.StartAsync();
        return receiver;
    }

    public async Task<ReceivedWebhook> NextAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        return await _received.Reader.ReadAsync(timeout.Token);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

internal sealed record ReceivedWebhook(string Body, string Timestamp, string Signature, string EventId);

/// <summary>A real local Kestrel on loopback that counts every request, any method and path, and answers as the test says.</summary>
internal sealed class TestHttpServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _requests;

    private TestHttpServer(WebApplication app, string url)
    {
        _app = app;
        Url = url;
    }

    /// <summary>Scheme, host and port, no trailing slash.</summary>
    public string Url { get; }

    public int Requests => Volatile.Read(ref _requests);

    public static async Task<TestHttpServer> StartAsync(Func<HttpContext, Task> answer)
    {
        var port = FreePorts.Tcp();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
        var app = builder.Build();
        var server = new TestHttpServer(app, $"http://127.0.0.1:{port}");
        app.Run(async http =>
        {
            Interlocked.Increment(ref server._requests);
            await answer(http);
        });
        await app.StartAsync();
        return server;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
