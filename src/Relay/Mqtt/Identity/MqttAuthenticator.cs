using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging;
using Relay.Server.Hosting;

namespace Relay.Server.Mqtt.Identity;

/// <summary>
/// Decides CONNECTs (MQTT 5.0 §3.1.4 step 2, MQTT 3.1.1 §3.1.4). In order:
/// <list type="number">
/// <item>an attempt takes a token of its source's failure budget first (an IP, or an IPv6 /64); a source
/// with none left is refused (<see cref="MqttAuthOutcome.RateLimited"/>) unchecked, and a success gives its
/// token back;</item>
/// <item>a TLS client certificate (validated by the TLS layer) whose subject CN is a registered device id
/// and equals the client id authenticates that device without a password;</item>
/// <item>no username and no password: anonymous, if <c>AllowAnonymous</c>;</item>
/// <item>with <c>AuthHook:FallbackOnly=false</c> the hook alone decides;</item>
/// <item>a service account (<c>Relay:Mqtt:ServiceAccounts</c>), then a registered device (client id =
/// username = device id, password = secret), then, when configured, the hook for unknown users.</item>
/// </list>
/// An unknown device id and a wrong secret get the same answer, in about the same time, and the client id
/// and the disabled flag are looked at only once the secret is proven, so nothing about a device leaks to
/// someone without its secret. A registered device's client id is refused to every other principal.
/// Failures are counted and logged at Information (at most one line per 10 s, with client id and username
/// shortened and escaped; never the password).
/// </summary>
internal sealed class MqttAuthenticator : IMqttAuthenticator
{
    private static readonly MqttIdentity AnonymousIdentity = new(MqttPrincipalKind.Anonymous, string.Empty, []);

    private readonly Dictionary<string, ServiceAccount> _services;
    private readonly IDeviceRegistry _devices;
    private readonly MqttAuthRateLimiter _limiter;
    private readonly MqttAuthHookClient? _hook;
    private readonly bool _hookDecidesAlone;
    private readonly bool _allowAnonymous;
    private readonly ILogger _logger;
    private readonly Primitives.LogThrottle _logThrottle;

    public MqttAuthenticator(MqttOptions options, IDeviceRegistry devices, MqttIdentityMetrics metrics, ILogger logger, TimeProvider time)
        : this(options, CompileServiceAccounts(options), devices, metrics, logger, time)
    {
    }

    private MqttAuthenticator(MqttOptions options, Dictionary<string, ServiceAccount> services, IDeviceRegistry devices, MqttIdentityMetrics metrics, ILogger logger, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(devices);
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(time);
        _services = services;
        _devices = devices;
        _logger = logger;
        _logThrottle = new Primitives.LogThrottle(2, TimeSpan.FromSeconds(10), time);
        _allowAnonymous = options.AllowAnonymous;
        _limiter = new MqttAuthRateLimiter(options.AuthFailuresPerMinutePerIp, time);
        if (!string.IsNullOrWhiteSpace(options.AuthHook.Url))
        {
            _hook = new MqttAuthHookClient(options.AuthHook, metrics, logger);
            _hookDecidesAlone = !options.AuthHook.FallbackOnly;
        }
    }

    /// <summary>The per-IP failure limiter (tests and metrics look at it).</summary>
    public MqttAuthRateLimiter RateLimiter => _limiter;

    /// <summary>
    /// Parses and validates <c>Relay:Mqtt:ServiceAccounts</c> and the hook options; throws
    /// <see cref="RelayConfigurationException"/> naming the bad key. Call at startup to fail early.
    /// </summary>
    public static void Validate(MqttOptions options)
    {
        CompileServiceAccounts(options);
        if (!string.IsNullOrWhiteSpace(options.AuthHook.Url))
        {
            _ = new MqttAuthHookClient(options.AuthHook, new MqttIdentityMetrics(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        }
    }

    /// <summary>Parses one grant: <c>pub:filter</c>, <c>sub:filter</c> or a bare filter (both actions).</summary>
    public static bool TryParseGrant(string text, out MqttGrant grant)
    {
        ArgumentNullException.ThrowIfNull(text);
        var (actions, filter) = text.StartsWith("pub:", StringComparison.Ordinal) ? (MqttAction.Publish, text[4..])
            : text.StartsWith("sub:", StringComparison.Ordinal) ? (MqttAction.Subscribe, text[4..])
            : (MqttAction.All, text);
        grant = new MqttGrant(filter, actions);
        return MqttTopicMatcher.IsValidFilter(filter);
    }

    public async ValueTask<MqttAuthResult> AuthenticateAsync(MqttAuthRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var address = request.RemoteEndPoint?.Address;
        if (!_limiter.TryAcquire(address))
        {
            // Debug, not Information: this is the path a password-guessing flood takes, and each of its
            // first failures was already logged.
            _logger.LogDebug("MQTT CONNECT refused: too many failed authentications from {RemoteAddress} (client {ClientId}, user {Username})", address, Primitives.LogText.Safe(request.ClientId), Primitives.LogText.Safe(request.Username));
            return MqttAuthResult.Denied(MqttAuthOutcome.RateLimited, "too many failed authentications from this address");
        }

        var result = await DecideAsync(request, cancellationToken).ConfigureAwait(false);
        if (result is { Outcome: MqttAuthOutcome.Allow, Identity.Kind: not MqttPrincipalKind.Device }
            && DeviceId.IsValid(request.ClientId)
            && await _devices.FindAsync(request.ClientId, cancellationToken).ConfigureAwait(false) is not null)
        {
            // A registered device's client id is that device's alone: another principal using it could
            // resume its session, receive its commands and kick it offline (review H1).
            result = MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "the client id is a registered device's");
        }

        switch (result.Outcome)
        {
            case MqttAuthOutcome.BadCredentials or MqttAuthOutcome.NotAuthorized:
                // The token this attempt took stays spent.
                if (_logThrottle.TryEnter(0, out var suppressed))
                {
                    _logger.LogInformation("MQTT authentication failed ({Outcome}: {Reason}): client {ClientId}, user {Username}, from {RemoteAddress} ({Suppressed} more failures since the last such line)", result.Outcome, result.Reason, Primitives.LogText.Safe(request.ClientId), Primitives.LogText.Safe(request.Username), address, suppressed);
                }

                break;
            case MqttAuthOutcome.Unavailable or MqttAuthOutcome.Busy:
                // Not the client's fault: its token comes back.
                _limiter.Refund(address);
                if (_logThrottle.TryEnter(1, out var held))
                {
                    _logger.LogWarning("MQTT authentication {Outcome} ({Reason}): client {ClientId}, user {Username}, from {RemoteAddress} ({Suppressed} more since the last such line)", result.Outcome, result.Reason, Primitives.LogText.Safe(request.ClientId), Primitives.LogText.Safe(request.Username), address, held);
                }

                break;
            default:
                _limiter.Refund(address);
                break;
        }

        return result;
    }

    private static Dictionary<string, ServiceAccount> CompileServiceAccounts(MqttOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var services = new Dictionary<string, ServiceAccount>(StringComparer.Ordinal);
        for (var i = 0; i < options.ServiceAccounts.Count; i++)
        {
            var account = options.ServiceAccounts[i];
            var key = $"{MqttOptions.SectionName}:ServiceAccounts:{i}";
            if (string.IsNullOrEmpty(account.Name) || string.IsNullOrEmpty(account.Password))
            {
                throw new RelayConfigurationException($"{key}: Name and Password must not be empty");
            }

            var grants = new MqttGrant[account.Grants.Count];
            for (var g = 0; g < grants.Length; g++)
            {
                if (!TryParseGrant(account.Grants[g], out grants[g]))
                {
                    throw new RelayConfigurationException($"{key}:Grants:{g}: '{account.Grants[g]}' is not [pub:|sub:]<valid MQTT topic filter>");
                }
            }

            if (!services.TryAdd(account.Name, new ServiceAccount(SHA256.HashData(Encoding.UTF8.GetBytes(account.Password)), new MqttIdentity(MqttPrincipalKind.Service, account.Name, grants))))
            {
                throw new RelayConfigurationException($"{key}:Name: '{account.Name}' is configured twice");
            }
        }

        return services;
    }

    private async ValueTask<MqttAuthResult> DecideAsync(MqttAuthRequest request, CancellationToken cancellationToken)
    {
        if (request.ClientCertificate is { } certificate
            && await CertificateIdentityAsync(certificate, request, cancellationToken).ConfigureAwait(false) is { } byCertificate)
        {
            return MqttAuthResult.Allowed(byCertificate);
        }

        var username = request.Username;
        if (username is null)
        {
            if (request.Password is not null)
            {
                return MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "password without a username");
            }

            return _allowAnonymous
                ? MqttAuthResult.Allowed(AnonymousIdentity)
                : MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "anonymous connections are not allowed");
        }

        if (_hook is not null && _hookDecidesAlone)
        {
            return await HookAsync(request, cancellationToken).ConfigureAwait(false);
        }

        if (_services.TryGetValue(username, out var service))
        {
            return PasswordMatches(service.PasswordHash, request.Password)
                ? MqttAuthResult.Allowed(service.Identity)
                : MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "wrong password");
        }

        var device = DeviceId.IsValid(username) ? await _devices.FindAsync(username, cancellationToken).ConfigureAwait(false) : null;
        if (device is null)
        {
            if (_hook is not null)
            {
                return await HookAsync(request, cancellationToken).ConfigureAwait(false);
            }

            // The same answer as a wrong secret, after the same work (review M2).
            DeviceSecretHasher.VerifyNothing(request.Password is { } given ? given.Span : []);
            return MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "unknown user");
        }

        var check = await _devices.VerifySecretAsync(username, request.Password ?? ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false);
        if (check == SecretCheck.Busy)
        {
            return MqttAuthResult.Denied(MqttAuthOutcome.Busy, "too many slow secret verifications waiting");
        }

        if (check != SecretCheck.Match || request.Password is null)
        {
            return MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "wrong secret");
        }

        // Only now that the secret is proven: these answers tell a caller that the device exists.
        if (!string.Equals(request.ClientId, username, StringComparison.Ordinal))
        {
            return MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "a device's client id must be its device id");
        }

        return device.Disabled
            ? MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "device disabled")
            : MqttAuthResult.Allowed(new MqttIdentity(MqttPrincipalKind.Device, device.Id, device.ExtraGrants));
    }

    private async ValueTask<MqttIdentity?> CertificateIdentityAsync(X509Certificate2 certificate, MqttAuthRequest request, CancellationToken cancellationToken)
    {
        var commonName = certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        if (string.IsNullOrEmpty(commonName) || !string.Equals(commonName, request.ClientId, StringComparison.Ordinal)
            || (request.Username is not null && !string.Equals(commonName, request.Username, StringComparison.Ordinal))
            || !DeviceId.IsValid(commonName))
        {
            return null;
        }

        var device = await _devices.FindAsync(commonName, cancellationToken).ConfigureAwait(false);
        return device is { Disabled: false } ? new MqttIdentity(MqttPrincipalKind.Device, device.Id, device.ExtraGrants) : null;
    }

    private async ValueTask<MqttAuthResult> HookAsync(MqttAuthRequest request, CancellationToken cancellationToken)
    {
        var outcome = await _hook!.AuthenticateAsync(request, cancellationToken).ConfigureAwait(false);
        return outcome switch
        {
            MqttAuthOutcome.Allow => MqttAuthResult.Allowed(new MqttIdentity(MqttPrincipalKind.External, request.Username ?? string.Empty, [])),
            MqttAuthOutcome.Unavailable => MqttAuthResult.Denied(MqttAuthOutcome.Unavailable, "authentication hook unavailable"),
            _ => MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "denied by the authentication hook"),
        };
    }

    // Both sides hashed first, so the comparison is fixed-length and its time says nothing about the
    // configured password's length or content.
    private static bool PasswordMatches(byte[] expectedHash, ReadOnlyMemory<byte>? password)
    {
        Span<byte> actual = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(password is { } p ? p.Span : [], actual);
        return CryptographicOperations.FixedTimeEquals(actual, expectedHash) & password.HasValue;
    }

    private sealed record ServiceAccount(byte[] PasswordHash, MqttIdentity Identity);
}
