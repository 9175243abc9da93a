using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// The HTTP authentication hook (<c>Relay:Mqtt:AuthHook</c>): asks an external service whether a
/// CONNECT's credentials are good. It POSTs a JSON body: <c>clientid</c>, <c>username</c>, <c>password</c>,
/// <c>ipaddress</c>, <c>protocol</c> (4 = 3.1.1, 5 = 5.0). <c>GET</c> is refused at startup (review L2): it put
/// the password in the URL, which the hook's access log and every proxy keep, over https too.
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
    private readonly string _logUrl;
    private readonly TimeSpan _timeout;
    private readonly int _retries;
    private readonly MqttIdentityMetrics _metrics;
    private readonly ILogger _logger;

    // Every CONNECT of an unknown user reaches the hook, so a client can repeat its failures at will: one
    // line per 10 s, every failure counted in relay_mqtt_auth_hook_errors_total.
    private readonly Primitives.LogThrottle _logThrottle = new(1);

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

        if (options.Method != MqttAuthHookMethod.Post)
        {
            throw new Hosting.RelayConfigurationException(options.Method == MqttAuthHookMethod.Get
                ? $"{Key}:Method: GET is not supported: it sent the password in the query string, where access logs and proxies keep it. Use POST (the same fields as a JSON body)."
                : $"{Key}:Method: '{options.Method}' must be Post");
        }

        if (options.TimeoutMilliseconds < 1 || options.Retries < 0 || options.Retries > 10)
        {
            throw new Hosting.RelayConfigurationException($"{Key}: TimeoutMilliseconds must be positive and Retries within 0..10");
        }

        _url = url;

        // Logged without user info and query (review L2): either may hold the hook's own credentials.
        _logUrl = Primitives.LogText.Url(url);
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
            using var message = new HttpRequestMessage(HttpMethod.Post, _url) { Content = JsonContent.Create(body, MqttAuthHookJson.Default.MqttAuthHookRequest) };
            using var response = await Http.SendAsync(message, timeout.Token).ConfigureAwait(false);
            var status = (int)response.StatusCode;
            if (status is >= 400 and < 500)
            {
                return MqttAuthOutcome.BadCredentials;
            }

            if (response.StatusCode != HttpStatusCode.OK)
            {
                if (_logThrottle.TryEnter(0, out var held))
                {
                    _logger.LogWarning("MQTT auth hook {Url} answered {Status} ({Suppressed} more hook failures since the last such line)", _logUrl, status, held);
                }

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
                    if (_logThrottle.TryEnter(0, out var held))
                    {
                        _logger.LogWarning("MQTT auth hook {Url} answered 200 without a result of allow or deny ({Suppressed} more hook failures since the last such line)", _logUrl, held);
                    }

                    return null;
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            if (_logThrottle.TryEnter(0, out var held))
            {
                _logger.LogWarning("MQTT auth hook {Url} did not answer within {Timeout} ms ({Suppressed} more hook failures since the last such line)", _logUrl, _timeout.TotalMilliseconds, held);
            }

            return null;
        }
        catch (Exception e) when (e is HttpRequestException or System.Text.Json.JsonException or NotSupportedException)
        {
            if (_logThrottle.TryEnter(0, out var held))
            {
                _logger.LogWarning("MQTT auth hook {Url} failed: {Error} ({Suppressed} more hook failures since the last such line)", _logUrl, e.Message, held);
            }

            return null;
        }
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
