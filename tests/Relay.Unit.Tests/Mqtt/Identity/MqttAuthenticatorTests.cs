using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Tests.Mqtt.Storage;
using Relay.Server.Tests.Turn;

namespace Relay.Server.Tests.Mqtt.Identity;

public sealed class MqttAuthenticatorTests : IAsyncLifetime
{
    private static readonly IPEndPoint Client = new(IPAddress.Parse("192.0.2.10"), 50000);
    private readonly TempDataDirectory _dir = new();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UnixEpoch.AddYears(55));
    private readonly TestLogger _log = new();
    private readonly MqttIdentityMetrics _metrics = new();
    private MqttDatabase _db = null!;
    private SqliteDeviceRegistry _registry = null!;

    public async Task InitializeAsync()
    {
        _db = MqttDatabase.Open(_dir.Path);
        _registry = new SqliteDeviceRegistry(_db, _time, iterations: 1000);
        await _registry.AddAsync("d1", "secret-1", [new MqttGrant("broadcast/#", MqttAction.Subscribe)], CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _db.DisposeAsync();
        _dir.Dispose();
    }

    private MqttAuthenticator Authenticator(Action<MqttOptions>? configure = null)
    {
        var options = new MqttOptions();
        var backend = new MqttServiceAccountOptions { Name = "backend", Password = "backend-pw" };
        backend.Grants.Add("pub:devices/+/commands/#");
        backend.Grants.Add("sub:devices/+/telemetry/#");
        backend.Grants.Add("status/#");
        options.ServiceAccounts.Add(backend);
        configure?.Invoke(options);
        return new MqttAuthenticator(options, _registry, _metrics, _log, _time);
    }

    private static MqttAuthRequest Request(string clientId, string? username, string? password, IPEndPoint? from = null, X509Certificate2? certificate = null, byte version = 5) =>
        new(clientId, username, password is null ? (ReadOnlyMemory<byte>?)null : Encoding.UTF8.GetBytes(password), from ?? Client, certificate, version);

    private static Task<MqttAuthResult> Auth(MqttAuthenticator authenticator, MqttAuthRequest request) =>
        authenticator.AuthenticateAsync(request, CancellationToken.None).AsTask();

    [Fact]
    public async Task Device_WithItsSecret_IsAllowed_WithItsExtraGrants()
    {
        var result = await Auth(Authenticator(), Request("d1", "d1", "secret-1"));
        Assert.Equal(MqttAuthOutcome.Allow, result.Outcome);
        Assert.Equal(new MqttIdentity(MqttPrincipalKind.Device, "d1", result.Identity!.Grants), result.Identity);
        Assert.Equal([new MqttGrant("broadcast/#", MqttAction.Subscribe)], result.Identity.Grants);
    }

    [Fact]
    public async Task Device_Failures_MapToTheirOutcomes()
    {
        var authenticator = Authenticator(o => o.AuthFailuresPerMinutePerIp = 0);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("d1", "d1", "wrong"))).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("d1", "d1", null))).Outcome);
        Assert.Equal(MqttAuthOutcome.NotAuthorized, (await Auth(authenticator, Request("someone-else", "d1", "secret-1"))).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("d9", "d9", "secret-1"))).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("x", "not/a/device", "p"))).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("d1", null, "secret-1"))).Outcome);
    }

    [Fact]
    public async Task Failures_AreLogged_WithClientUserAndAddress_ButNeverThePassword()
    {
        await Auth(Authenticator(), Request("d1", "d1", "hunter2-wrong"));
        var (level, message) = Assert.Single(_log.Entries, e => e.Message.Contains("authentication failed", StringComparison.Ordinal));
        Assert.Equal(LogLevel.Information, level);
        Assert.Contains("d1", message, StringComparison.Ordinal);
        Assert.Contains("192.0.2.10", message, StringComparison.Ordinal);
        Assert.All(_log.Entries, e => Assert.DoesNotContain("hunter2", e.Message, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ServiceAccount_IsAllowed_WithParsedGrants_AndWrongPasswordIsBadCredentials()
    {
        var authenticator = Authenticator();
        var result = await Auth(authenticator, Request("backend-1", "backend", "backend-pw"));
        Assert.Equal(MqttAuthOutcome.Allow, result.Outcome);
        Assert.Equal(MqttPrincipalKind.Service, result.Identity!.Kind);
        Assert.Equal("backend", result.Identity.Name);
        Assert.Equal(
            [new MqttGrant("devices/+/commands/#", MqttAction.Publish), new MqttGrant("devices/+/telemetry/#", MqttAction.Subscribe), new MqttGrant("status/#", MqttAction.All)],
            result.Identity.Grants);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("backend-1", "backend", "backend-p"))).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("backend-1", "backend", null))).Outcome);
    }

    [Fact]
    public async Task Anonymous_OnlyWhenAllowed()
    {
        Assert.Equal(MqttAuthOutcome.NotAuthorized, (await Auth(Authenticator(), Request("c", null, null))).Outcome);
        var result = await Auth(Authenticator(o => o.AllowAnonymous = true), Request("c", null, null));
        Assert.Equal(MqttAuthOutcome.Allow, result.Outcome);
        Assert.Equal(new MqttIdentity(MqttPrincipalKind.Anonymous, "", result.Identity!.Grants), result.Identity);
        Assert.Empty(result.Identity.Grants);
    }

    [Fact]
    public async Task ClientCertificate_WhoseCnIsTheDevice_AuthenticatesWithoutPassword()
    {
        using var d1 = Certificate("d1");
        using var d2 = Certificate("d2");
        var authenticator = Authenticator();
        var result = await Auth(authenticator, Request("d1", null, null, certificate: d1));
        Assert.Equal(MqttAuthOutcome.Allow, result.Outcome);
        Assert.Equal("d1", result.Identity!.Name);
        Assert.Equal(MqttPrincipalKind.Device, result.Identity.Kind);
        Assert.Equal(MqttAuthOutcome.Allow, (await Auth(authenticator, Request("d1", "d1", null, certificate: d1))).Outcome);

        // CN must equal the client id, and name a registered device; otherwise the certificate grants nothing.
        Assert.Equal(MqttAuthOutcome.NotAuthorized, (await Auth(authenticator, Request("d2", null, null, certificate: d1))).Outcome);
        Assert.Equal(MqttAuthOutcome.NotAuthorized, (await Auth(authenticator, Request("d2", null, null, certificate: d2))).Outcome);
        // ...and then the password path still works.
        Assert.Equal(MqttAuthOutcome.Allow, (await Auth(authenticator, Request("d1", "d1", "secret-1", certificate: d2))).Outcome);
    }

    [Fact]
    public async Task FailuresPerIp_AreRateLimited_WithoutCheckingThePassword_AndRecover()
    {
        var authenticator = Authenticator(o => o.AuthFailuresPerMinutePerIp = 3);
        var attacker = new IPEndPoint(IPAddress.Parse("198.51.100.7"), 1234);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("d1", "d1", "guess" + i, attacker))).Outcome);
        }

        var runs = _registry.Pbkdf2Runs;
        Assert.Equal(MqttAuthOutcome.RateLimited, (await Auth(authenticator, Request("d1", "d1", "secret-1", attacker))).Outcome);
        // The same address over IPv6-mapped form is the same client.
        var mapped = new IPEndPoint(IPAddress.Parse("198.51.100.7").MapToIPv6(), 1);
        Assert.Equal(MqttAuthOutcome.RateLimited, (await Auth(authenticator, Request("d1", "d1", "secret-1", mapped))).Outcome);
        Assert.Equal(runs, _registry.Pbkdf2Runs);

        // Another address is not affected.
        Assert.Equal(MqttAuthOutcome.Allow, (await Auth(authenticator, Request("d1", "d1", "secret-1"))).Outcome);

        // 3 per minute: one failure's worth comes back every 20 s.
        _time.Advance(TimeSpan.FromSeconds(21));
        Assert.Equal(MqttAuthOutcome.Allow, (await Auth(authenticator, Request("d1", "d1", "secret-1", attacker))).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, Request("d1", "d1", "again", attacker))).Outcome);
        Assert.Equal(MqttAuthOutcome.RateLimited, (await Auth(authenticator, Request("d1", "d1", "secret-1", attacker))).Outcome);
    }

    [Fact]
    public void RateLimiter_TableIsBounded_EvictingTheOldest()
    {
        var limiter = new MqttAuthRateLimiter(1, _time, maxTrackedAddresses: 3);
        var addresses = Enumerable.Range(1, 4).Select(i => IPAddress.Parse($"203.0.113.{i}")).ToArray();
        foreach (var address in addresses)
        {
            limiter.RecordFailure(address);
            _time.Advance(TimeSpan.FromMilliseconds(1));
        }

        Assert.Equal(3, limiter.TrackedAddresses);
        Assert.False(limiter.IsLimited(addresses[0])); // evicted
        Assert.True(limiter.IsLimited(addresses[1]));
        Assert.True(limiter.IsLimited(addresses[3]));
        Assert.False(limiter.IsLimited(null));
    }

    [Theory]
    [InlineData("", "pw", "ServiceAccounts:0")]
    [InlineData("svc", "pw", "ServiceAccounts:0:Grants:0", "a/#/b")]
    [InlineData("svc", "pw", "ServiceAccounts:0:Grants:0", "pub:")]
    public void InvalidServiceAccounts_StopStartup_NamingTheKey(string name, string password, string key, string? grant = null)
    {
        var options = new MqttOptions();
        var account = new MqttServiceAccountOptions { Name = name, Password = password };
        if (grant is not null)
        {
            account.Grants.Add(grant);
        }

        options.ServiceAccounts.Add(account);
        var error = Assert.Throws<RelayConfigurationException>(() => MqttAuthenticator.Validate(options));
        Assert.Contains(key, error.Message, StringComparison.Ordinal);
    }

    private static X509Certificate2 Certificate(string commonName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}, O=Relay tests", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }
}
