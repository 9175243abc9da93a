using System.Buffers;
using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Relay.Server.Devices;

namespace Relay.Server.Push.Webhooks;

/// <summary>
/// Webhooks: an <see cref="IPushEventSink"/> that serializes each event once and queues it for every
/// receiver that wants its kind, and one sender loop per receiver that POSTs
/// <c>{"type","at","data"}</c> signed with <c>X-Relay-Signature: sha256=HMAC-SHA256(secret, timestamp + "." + body)</c>
/// and <c>X-Relay-Timestamp</c> (Unix seconds; receivers reject old timestamps to stop replays).
/// A loop per receiver so a slow or dead receiver delays only its own events. Queues are bounded:
/// when one is full the event is dropped for that receiver and counted, because the sink must never
/// block the command path. Delivery is at least once (a retry after a lost response repeats the
/// event; receivers de-duplicate by <c>X-Relay-Event-Id</c>) and not durable: events queued or
/// waiting for a retry when the server stops are lost.
/// </summary>
internal sealed partial class WebhookDispatcher : IPushEventSink, IHostedService, IDisposable
{
    private readonly Receiver[] _receivers;
    private readonly WebhookMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly HttpClient _http;
    private readonly CancellationTokenSource _stopping = new();
    private Task[] _loops = [];
    private int _disposed;

    public WebhookDispatcher(IReadOnlyList<WebhookOptions> webhooks, WebhookMetrics metrics, ILogger logger, TimeProvider time, HttpMessageHandler? handler = null)
    {
        _receivers = [.. webhooks.Select(static (w, i) => new Receiver(i, w, Primitives.LogText.Url(w.Url), Channel.CreateBounded<WebhookEvent>(new BoundedChannelOptions(w.QueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        })))];
        _metrics = metrics;
        _logger = logger;
        _time = time;
        // Per-request timeouts come from each receiver's TimeoutSeconds; connections are recycled so a
        // receiver moving to another address (DNS) is followed. Redirects are not followed (review L4): a
        // receiver, or whoever sits on its path, could otherwise bounce the signed POST to loopback or a
        // cloud metadata address that the operator never configured.
        _http = new HttpClient(handler ?? new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5), AllowAutoRedirect = false }) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public void OnCommandTransition(CommandTransition transition)
    {
        ArgumentNullException.ThrowIfNull(transition);
        Enqueue(WebhookOptions.CommandEvents, transition.At, writer =>
        {
            writer.WriteString("commandId", transition.CommandId);
            writer.WriteString("deviceId", transition.DeviceId);
            writer.WriteString("name", transition.Name);
            writer.WriteString("state", transition.State.ToString().ToLowerInvariant());
            if (transition.ResultJson is { } result)
            {
                writer.WritePropertyName("result");
                WriteRawOrString(writer, result);
            }
        });
    }

    public void OnPresenceChanged(DevicePresence presence)
    {
        ArgumentNullException.ThrowIfNull(presence);
        Enqueue(WebhookOptions.PresenceEvents, _time.GetUtcNow(), writer =>
        {
            writer.WriteString("deviceId", presence.DeviceId);
            writer.WriteBoolean("online", presence.Online);
            WriteTime(writer, "lastSeen", presence.LastSeen);
            if (presence.RemoteEndPoint is { } remote)
            {
                writer.WriteString("remoteAddress", remote.ToString());
            }
            else
            {
                writer.WriteNull("remoteAddress");
            }

            if (presence.ProtocolVersion != 0)
            {
                writer.WriteNumber("protocolVersion", presence.ProtocolVersion);
            }
            else
            {
                writer.WriteNull("protocolVersion");
            }

            WriteTime(writer, "connectedSince", presence.ConnectedSince);
        });
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _loops = [.. _receivers.Select(r => Task.Run(() => RunAsync(r)))];
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        foreach (var receiver in _receivers)
        {
            receiver.Queue.Writer.TryComplete();
        }

        // Abandon retries and in-flight POSTs: shutdown must not wait minutes of backoff.
        await _stopping.CancelAsync();
        await Task.WhenAll(_loops).WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    // The container disposes this once per registration (class, sink, hosted service): idempotent.
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _stopping.Cancel();
        _stopping.Dispose();
        _http.Dispose();
    }

    /// <summary><c>sha256=</c> and the lower-case hex HMAC-SHA256 of <c>timestamp + "." + body</c> under <paramref name="secret"/>.</summary>
    public static string Sign(string secret, string timestamp, ReadOnlySpan<byte> body)
    {
        var key = Encoding.UTF8.GetBytes(secret);
        var signed = new byte[Encoding.UTF8.GetByteCount(timestamp) + 1 + body.Length];
        var written = Encoding.UTF8.GetBytes(timestamp, signed);
        signed[written] = (byte)'.';
        body.CopyTo(signed.AsSpan(written + 1));
        Span<byte> mac = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(key, signed, mac);
        return "sha256=" + Convert.ToHexStringLower(mac);
    }

    private static void WriteTime(Utf8JsonWriter writer, string name, DateTimeOffset? value)
    {
        if (value is { } v)
        {
            writer.WriteString(name, v.UtcDateTime);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    // The result is the device's JSON; if it is somehow not valid JSON it goes as a string, not as a broken body.
    private static void WriteRawOrString(Utf8JsonWriter writer, string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            document.RootElement.WriteTo(writer);
        }
        catch (JsonException)
        {
            writer.WriteStringValue(json);
        }
    }

    private void Enqueue(string kind, DateTimeOffset at, Action<Utf8JsonWriter> writeData)
    {
        byte[]? body = null;
        string? id = null;
        foreach (var receiver in _receivers)
        {
            if (!receiver.Options.Wants(kind))
            {
                continue;
            }

            if (body is null)
            {
                id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));
                var buffer = new ArrayBufferWriter<byte>(256);
                using (var writer = new Utf8JsonWriter(buffer))
                {
                    writer.WriteStartObject();
                    writer.WriteString("id", id);
                    writer.WriteString("type", kind);
                    writer.WriteString("at", at.UtcDateTime);
                    writer.WriteStartObject("data");
                    writeData(writer);
                    writer.WriteEndObject();
                    writer.WriteEndObject();
                }

                body = buffer.WrittenSpan.ToArray();
            }

            if (!receiver.Queue.Writer.TryWrite(new WebhookEvent(id!, kind, body)))
            {
                var dropped = _metrics.CountDropped(receiver.Index);
                // The first drop, then one line per thousand: a dead receiver under load must not flood the log.
                if (dropped == 1 || dropped % 1000 == 0)
                {
                    LogDropped(_logger, receiver.Index, receiver.LogUrl, dropped, receiver.Options.QueueCapacity);
                }
            }
        }
    }

    private async Task RunAsync(Receiver receiver)
    {
        var stopping = _stopping.Token;
        try
        {
            await foreach (var e in receiver.Queue.Reader.ReadAllAsync(stopping))
            {
                await DeliverAsync(receiver, e, stopping);
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
    }

    private async Task DeliverAsync(Receiver receiver, WebhookEvent e, CancellationToken stopping)
    {
        var options = receiver.Options;
        var backoff = TimeSpan.FromMilliseconds(options.InitialBackoffMilliseconds);
        var maxBackoff = TimeSpan.FromSeconds(options.MaxBackoffSeconds);
        for (var attempt = 1; ; attempt++)
        {
            var failure = await PostAsync(options, e, stopping);
            if (failure is null)
            {
                _metrics.CountDelivered(receiver.Index);
                return;
            }

            _metrics.CountFailedAttempt(receiver.Index);
            if (attempt >= options.MaxAttempts)
            {
                _metrics.CountGivenUp(receiver.Index);
                LogGivenUp(_logger, e.Type, e.Id, receiver.Index, receiver.LogUrl, attempt, failure);
                return;
            }

            LogRetry(_logger, e.Type, e.Id, receiver.Index, receiver.LogUrl, attempt, failure, backoff.TotalMilliseconds);
            await Task.Delay(backoff, _time, stopping);
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, maxBackoff.Ticks));
        }
    }

    /// <summary>Null when the receiver answered 2xx; otherwise why not.</summary>
    private async Task<string?> PostAsync(WebhookOptions options, WebhookEvent e, CancellationToken stopping)
    {
        // A fresh timestamp and signature per attempt: a receiver rejecting stale timestamps must still accept a late retry.
        var timestamp = _time.GetUtcNow().ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture);
        using var request = new HttpRequestMessage(HttpMethod.Post, options.Url) { Content = new ByteArrayContent(e.Body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        request.Headers.Add("X-Relay-Event-Id", e.Id);
        request.Headers.Add("X-Relay-Timestamp", timestamp);
        request.Headers.Add("X-Relay-Signature", Sign(options.Secret, timestamp, e.Body));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(TimeSpan.FromSeconds(options.TimeoutSeconds));
        try
        {
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var status = (int)response.StatusCode;
            return status switch
            {
                >= 200 and < 300 => null,

                // Where it points is not logged: a Location may carry a token as well.
                >= 300 and < 400 => $"HTTP {status}, a redirect: not followed; the configured URL must answer 2xx itself",
                _ => $"HTTP {status}",
            };
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
        {
            return $"no answer within {options.TimeoutSeconds} s";
        }
        catch (HttpRequestException ex)
        {
            return ex.Message;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook {Index} ({Url}): queue full ({Capacity}); {Dropped} event(s) dropped so far. The receiver is too slow or down.")]
    private static partial void LogDropped(ILogger logger, int index, string url, long dropped, int capacity);

    [LoggerMessage(Level = LogLevel.Information, Message = "Webhook {Index} ({Url}): {Type} event {Id} attempt {Attempt} failed ({Failure}); retrying in {DelayMs} ms")]
    private static partial void LogRetry(ILogger logger, string type, string id, int index, string url, int attempt, string failure, double delayMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Webhook {Index} ({Url}): gave up on {Type} event {Id} after {Attempts} attempts (last: {Failure})")]
    private static partial void LogGivenUp(ILogger logger, string type, string id, int index, string url, int attempts, string failure);

    /// <summary>One configured receiver; <paramref name="LogUrl"/> is its URL without user info or query (review L2).</summary>
    private sealed record Receiver(int Index, WebhookOptions Options, string LogUrl, Channel<WebhookEvent> Queue);

    private sealed record WebhookEvent(string Id, string Type, byte[] Body);
}
