using System.Buffers;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace Relay.Server.Connectors;

/// <summary>
/// POSTs each batch as one JSON array (<c>Content-Type: application/json</c>, <c>Authorization: Bearer</c> when
/// configured):
/// <code>
/// [{"clientId":"d1","topic":"devices/d1/telemetry","payload":"eyJ0IjoyMX0=","qos":1,"retain":false,
///   "receivedAt":"2026-05-20T14:47:00.123Z"}, ...]
/// </code>
/// <c>payload</c> is base64 (payloads are bytes). Any 2xx is success; 408, 429 and 5xx (and no answer) are
/// retried; any other status is a refusal: the batch is dropped and counted (<c>reason="rejected"</c>).
/// Redirects are not followed: the batch goes to the configured URL or nowhere.
/// </summary>
internal sealed class HttpConnectorTarget : IConnectorTarget
{
    private readonly Uri _url;
    private readonly AuthenticationHeaderValue? _authorization;
    private readonly HttpClient _http;

    public HttpConnectorTarget(HttpConnectorOptions options, HttpMessageHandler? handler = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _url = new Uri(options.Url, UriKind.Absolute);
        _authorization = options.BearerToken.Length > 0 ? new AuthenticationHeaderValue("Bearer", options.BearerToken) : null;

        // The pipeline's timeout bounds each POST; connections are recycled so a receiver that moves (DNS) is followed.
        _http = new HttpClient(handler ?? new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5), AllowAutoRedirect = false })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
    }

    /// <summary>The JSON array for <paramref name="batch"/>.</summary>
    public static byte[] Serialize(IReadOnlyList<ConnectorMessage> batch)
    {
        var buffer = new ArrayBufferWriter<byte>(256 + (batch.Count * 128));
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (var message in batch)
            {
                writer.WriteStartObject();
                writer.WriteString("clientId", message.ClientId);
                writer.WriteString("topic", message.Topic);
                writer.WriteBase64String("payload", message.Payload.Span);
                writer.WriteNumber("qos", message.QoS);
                writer.WriteBoolean("retain", message.Retain);
                writer.WriteString("receivedAt", message.ReceivedAt.UtcDateTime);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }

        return buffer.WrittenSpan.ToArray();
    }

    public async Task DeliverAsync(IReadOnlyList<ConnectorMessage> batch, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, _url) { Content = new ByteArrayContent(Serialize(batch)) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.Authorization = _authorization;
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        var status = (int)response.StatusCode;
        if (status is >= 200 and < 300)
        {
            return;
        }

        if (status is >= 500 or (int)HttpStatusCode.RequestTimeout or (int)HttpStatusCode.TooManyRequests)
        {
            throw new HttpRequestException($"HTTP {status}", inner: null, response.StatusCode);
        }

        throw new ConnectorRejectedException($"HTTP {status}");
    }

    public ValueTask DisposeAsync()
    {
        _http.Dispose();
        return ValueTask.CompletedTask;
    }
}
