using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace Relay.Mqtt.InMemory;

/// <summary>
/// Authenticates from configuration alone: <c>Relay:Mqtt:Devices</c> (client id = username = device id,
/// password = secret, or a TLS client certificate whose CN is the device id), <c>Relay:Mqtt:ServiceAccounts</c>,
/// and anonymous clients when <c>Relay:Mqtt:AllowAnonymous</c> is on. The identity engineer's registry-backed
/// authenticator replaces it by registration.
/// </summary>
internal sealed class ConfiguredMqttAuthenticator : IMqttAuthenticator
{
    private readonly MqttOptions _options;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, byte[]> _devices = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (byte[] Password, MqttGrant[] Grants)> _services = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<IPAddress, FailureWindow> _failures = new();

    public ConfiguredMqttAuthenticator(MqttOptions options, TimeProvider time)
    {
        _options = options;
        _time = time;
        foreach (var device in options.Devices)
        {
            _devices[device.Id] = Encoding.UTF8.GetBytes(device.Secret);
        }

        foreach (var account in options.ServiceAccounts)
        {
            _services[account.Name] = (Encoding.UTF8.GetBytes(account.Password), account.Grants.Select(ParseGrant).ToArray());
        }
    }

    public ValueTask<MqttAuthResult> AuthenticateAsync(MqttAuthRequest request, CancellationToken cancellationToken)
    {
        var ip = request.RemoteEndPoint?.Address;
        if (ip is not null && _failures.TryGetValue(ip, out var window) && window.IsOver(_time.GetUtcNow(), _options.AuthFailuresPerMinutePerIp))
        {
            return ValueTask.FromResult(MqttAuthResult.Denied(MqttAuthOutcome.RateLimited, "too many failed attempts from this address"));
        }

        var result = Authenticate(request);
        if (result.Outcome is MqttAuthOutcome.BadCredentials or MqttAuthOutcome.NotAuthorized && ip is not null)
        {
            _failures.GetOrAdd(ip, static _ => new FailureWindow()).Add(_time.GetUtcNow());
        }

        return ValueTask.FromResult(result);
    }

    private MqttAuthResult Authenticate(MqttAuthRequest request)
    {
        if (request.ClientCertificate is { } certificate && !string.Equals(_options.ClientCertificateMode, "None", StringComparison.OrdinalIgnoreCase))
        {
            var cn = certificate.GetNameInfo(System.Security.Cryptography.X509Certificates.X509NameType.SimpleName, forIssuer: false);
            if (cn is not null && _devices.ContainsKey(cn))
            {
                return request.ClientId == cn
                    ? MqttAuthResult.Allowed(new MqttIdentity(MqttPrincipalKind.Device, cn, []))
                    : MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "client id must equal the certificate's device id");
            }
        }

        if (request.Username is null)
        {
            return _options.AllowAnonymous
                ? MqttAuthResult.Allowed(new MqttIdentity(MqttPrincipalKind.Anonymous, request.ClientId, []))
                : MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "anonymous clients are not allowed");
        }

        var password = request.Password ?? ReadOnlyMemory<byte>.Empty;
        if (_devices.TryGetValue(request.Username, out var secret))
        {
            if (!CryptographicOperations.FixedTimeEquals(secret, password.Span))
            {
                return MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "bad device secret");
            }

            return request.ClientId == request.Username
                ? MqttAuthResult.Allowed(new MqttIdentity(MqttPrincipalKind.Device, request.Username, []))
                : MqttAuthResult.Denied(MqttAuthOutcome.NotAuthorized, "client id must equal the device id");
        }

        if (_services.TryGetValue(request.Username, out var account))
        {
            return CryptographicOperations.FixedTimeEquals(account.Password, password.Span)
                ? MqttAuthResult.Allowed(new MqttIdentity(MqttPrincipalKind.Service, request.Username, account.Grants))
                : MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "bad service account password");
        }

        return MqttAuthResult.Denied(MqttAuthOutcome.BadCredentials, "unknown user");
    }

    private static MqttGrant ParseGrant(string grant)
    {
        if (grant.StartsWith("pub:", StringComparison.OrdinalIgnoreCase))
        {
            return new MqttGrant(grant[4..], MqttAction.Publish);
        }

        return grant.StartsWith("sub:", StringComparison.OrdinalIgnoreCase)
            ? new MqttGrant(grant[4..], MqttAction.Subscribe)
            : new MqttGrant(grant, MqttAction.All);
    }

    /// <summary>Failures in the current minute; one small object per failing address, reset each minute.</summary>
    private sealed class FailureWindow
    {
        private readonly Lock _sync = new();
        private DateTimeOffset _start;
        private int _count;

        public void Add(DateTimeOffset now)
        {
            lock (_sync)
            {
                if (now - _start >= TimeSpan.FromMinutes(1))
                {
                    _start = now;
                    _count = 0;
                }

                _count++;
            }
        }

        public bool IsOver(DateTimeOffset now, int limit)
        {
            lock (_sync)
            {
                return now - _start < TimeSpan.FromMinutes(1) && _count >= limit;
            }
        }
    }
}
