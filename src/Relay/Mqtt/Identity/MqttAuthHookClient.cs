using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// The HTTP authentication hook (<c>Relay:Mqtt:AuthHook</c>): asks an external service whether a
/// CONNECT's credentials are good. <c>POST</c> sends a JSON body, <c>GET</c> the same fields as a query
/// string: <c>clientid</c>, <c>username</c>, <c>password</c>, <c>ipaddress</c>, <c>protocol</c> (4 = 3.1.1, 5 = 5.0).
/// A 200 with <c>{"result":"allow"}</c> allows, <c>{"result":"deny"}</c> or any 4xx denies; a timeout,
/// a connection error, a 5xx or an unreadable 200 is retried <c>Retries</c> times and then reported
/// as unavailable, so the client is told "server unavailable" rather than "bad password".
/// </summary>
internal sealed class MqttAuthHookClient
{
    // One client for the process: sockets are pooled across calls, and PooledConnectionLifetime makes
    // a DNS change of the hook's host take effect. Per-attempt timeouts come from a token, not HttpClient.Timeout.
    private static readonly HttpClient Http = new(new SocketsHttpHandler
    {
        PooledConnectionLifetime = TimeSpan.FromMinutes(2),
        ConnectTimeout = TimeSpan.FromSeconds(10),
        AllowAutoRedirect = false,
    })
    {
        Timeout = Timeout.InfiniteTimeSpan,
        // The answer is one small JSON object; a larger one is an error, not something to buffer.
        MaxResponseContentBufferSize = 16 * 1024,
    };

    private readonly Uri _url;
    private readonly bool _get;
    private readonly TimeSpan _timeout;
    private readonly int _retries;
    private readonly MqttIdentityMetrics _metrics;
    private readonly ILogger _logger;

    public MqttAuthHookClient(MqttAuthHookOptions options, MqttIdentityMetrics metrics, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentNullException.ThrowIfNull(logger);
        const string Key = MqttOptions.SectionName + ":AuthHook";
        if (!Uri.TryCreate(options.Url, UriKind.Absolute, out var url) || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
        {
            throw new Hosting.RelayConfigurationException($"{Key}:Url: '{options.Url}' must be an absolute http or https URL");
        }

        _get = options.Method switch
        {
            MqttAuthHookMethod.Post => false,
            MqttAuthHookMethod.Get => true,
            _ => throw new Hosting.RelayConfigurationException($"{Key}:Method: must be {Hosting.StrictBinder.Choices(typeof(MqttAuthHookMethod))} (was '{options.Method}')"),
        };
        if (options.TimeoutMilliseconds < 1 || options.Retries < 0 || options.Retries > 10)
        {
            throw new Hosting.RelayConfigurationException($"{Key}: TimeoutMilliseconds must be positive and Retries within 0..10");
        }

        _url = url;
        _timeout = TimeSpan.FromMilliseconds(options.TimeoutMilliseconds);
        _retries = options.Retries;
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>Allow, BadCredentials (denied) or Unavailable.</summary>
    public async ValueTask<MqttAuthOutcome> AuthenticateAsync(MqttAuthRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var body = new MqttAuthHookRequest(
            request.ClientId,
            request.Username ?? string.Empty,
            request.Password is { } password ? Encoding.UTF8.GetString(password.Span) : string.Empty,
            request.RemoteEndPoint?.Address.ToString() ?? string.Empty,
            request.ProtocolVersion);
        var outcome = MqttAuthOutcome.Unavailable;
        for (var attempt = 0; attempt <= _retries; attempt++)
        {
            _metrics.HookAttempt();
            var answer = await AttemptAsync(body, cancellationToken).ConfigureAwait(false);
            if (answer is { } decided)
            {
                outcome = decided;
                break;
            }

            _metrics.HookError();
        }

        _metrics.HookResult(outcome);
        return outcome;
    }

    /// <summary>Null: this attempt failed and may be retried.</summary>
    private async ValueTask<MqttAuthOutcome?> AttemptAsync(MqttAuthHookRequest body, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_timeout);
        try
        {
            using var message = _get
                ? new HttpRequestMessage(HttpMethod.Get, Query(body))
                : new HttpRequestMessage(HttpMethod.Post, _url) { Content = JsonContent.Create(body, MqttAuthHookJson.Default.MqttAuthHookRequest) };
            using var response = await Http.SendAsync(message, timeout.Token).ConfigureAwait(false);
            var status = (int)response.StatusCode;
            if (status is >= 400 and < 500)
            {
                return MqttAuthOutcome.BadCredentials;
            }

            if (response.StatusCode != HttpStatusCode.OK)
            {
                _logger.LogWarning("MQTT auth hook {Url} answered {Status}", _url, status);
                return null;
            }

            var answer = await response.Content.ReadFromJsonAsync(MqttAuthHookJson.Default.MqttAuthHookResponse, timeout.Token).ConfigureAwait(false);
            switch (answer?.Result?.ToUpperInvariant())
            {
                case "ALLOW":
                    return MqttAuthOutcome.Allow;
                case "DENY":
                    return MqttAuthOutcome.BadCredentials;
                default:
                    _logger.LogWarning("MQTT auth hook {Url} answered 200 without a result of allow or deny", _url);
                    return null;
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            _logger.LogWarning("MQTT auth hook {Url} did not answer within {Timeout} ms", _url, _timeout.TotalMilliseconds);
            return null;
        }
        catch (Exception e) when (e is HttpRequestException or System.Text.Json.JsonException or NotSupportedException)
        {
            _logger.LogWarning("MQTT auth hook {Url} failed: {Error}", _url, e.Message);
            return null;
        }
    }

    private Uri Query(MqttAuthHookRequest body)
    {
        var query = new StringBuilder(_url.Query.Length > 1 ? _url.Query : "?");
        if (query.Length > 1)
        {
            query.Append('&');
        }

        query.Append("clientid=").Append(Uri.EscapeDataString(body.ClientId))
            .Append("&username=").Append(Uri.EscapeDataString(body.Username))
            .Append("&password=").Append(Uri.EscapeDataString(body.Password))
            .Append("&ipaddress=").Append(Uri.EscapeDataString(body.IpAddress))
            .Append("&protocol=").Append(body.Protocol.ToString(CultureInfo.InvariantCulture));
        return new UriBuilder(_url) { Query = query.ToString(1, query.Length - 1) }.Uri;
    }
}

/// <summary>The hook's request body.</summary>
internal sealed record MqttAuthHookRequest(
    [property: JsonPropertyName("clientid")] string ClientId,
    [property: JsonPropertyName("username")] string Username,
    [property: JsonPropertyName("password")] string Password,
    [property: JsonPropertyName("ipaddress")] string IpAddress,
    [property: JsonPropertyName("protocol")] byte Protocol);

/// <summary>The hook's answer.</summary>
internal sealed record MqttAuthHookResponse([property: JsonPropertyName("result")] string? Result);

[JsonSerializable(typeof(MqttAuthHookRequest))]
[JsonSerializable(typeof(MqttAuthHookResponse))]
internal sealed partial class MqttAuthHookJson : JsonSerializerContext;
