using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Mqtt.Storage;
using Relay.Server.Tests.Mqtt.Storage;

namespace Relay.Server.Tests.Mqtt.Identity;

/// <summary>The HTTP authentication hook against a real Kestrel server on 127.0.0.1.</summary>
public sealed class MqttAuthHookTests : IAsyncLifetime
{
    private readonly TempDataDirectory _dir = new();
    private readonly ConcurrentQueue<(string Path, string Method, string Query, string Body)> _calls = new();
    private readonly MqttIdentityMetrics _metrics = new();
    private WebApplication _server = null!;
    private MqttDatabase _db = null!;
    private SqliteDeviceRegistry _registry = null!;
    private string _base = null!;
    private int _flaky;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        _server = builder.Build();
        _server.Use(async (context, next) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            var body = await reader.ReadToEndAsync(context.RequestAborted);
            _calls.Enqueue((context.Request.Path, context.Request.Method, context.Request.QueryString.Value ?? "", body));
            await next(context);
        });
        _server.MapMethods("/allow", ["GET", "POST"], () => Results.Json(new Dictionary<string, string> { ["result"] = "allow" }));
        _server.MapPost("/deny", () => Results.Json(new Dictionary<string, string> { ["result"] = "deny" }));
        _server.MapPost("/forbidden", () => Results.StatusCode(403));
        _server.MapPost("/error", () => Results.StatusCode(500));
        _server.MapPost("/garbage", () => Results.Text("not json", "application/json"));
        _server.MapPost("/flaky", () => Interlocked.Increment(ref _flaky) == 1 ? Results.StatusCode(500) : Results.Json(new Dictionary<string, string> { ["result"] = "allow" }));
        _server.MapPost("/hang", async (HttpContext context) =>
        {
            // Never answers; the client's per-attempt timeout must give up. Ends when the client aborts.
            await Task.Delay(Timeout.Infinite, context.RequestAborted).ContinueWith(static _ => { }, TaskScheduler.Default);
            return Results.StatusCode(200);
        });
        await _server.StartAsync();
        _base = _server.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();

        _db = MqttDatabase.Open(_dir.Path);
        _registry = new SqliteDeviceRegistry(_db, TimeProvider.System, iterations: 1000);
        await _registry.AddAsync("d1", "secret-1", [], CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _server.StopAsync();
        await _server.DisposeAsync();
        await _db.DisposeAsync();
        _dir.Dispose();
    }

    private MqttAuthenticator Authenticator(string url, string method = "POST", bool fallbackOnly = true, int retries = 1, int timeoutMs = 2000, TestLogger? logger = null)
    {
        var options = new MqttOptions { AuthFailuresPerMinutePerIp = 0 };
        options.AuthHook = new MqttAuthHookOptions { Url = url, Method = Enum.Parse<MqttAuthHookMethod>(method, ignoreCase: true), FallbackOnly = fallbackOnly, Retries = retries, TimeoutMilliseconds = timeoutMs };
        return new MqttAuthenticator(options, _registry, _metrics, logger ?? new TestLogger(), TimeProvider.System);
    }

    private static async Task<MqttAuthResult> Auth(MqttAuthenticator authenticator, string clientId, string username, string password) =>
        await authenticator.AuthenticateAsync(
            new MqttAuthRequest(clientId, username, Encoding.UTF8.GetBytes(password), new IPEndPoint(IPAddress.Parse("192.0.2.33"), 4000), null, 4),
            CancellationToken.None);

    [Fact]
    public async Task Post_Allow_SendsTheCredentialsAsJson_AndYieldsAnExternalIdentity()
    {
        var result = await Auth(Authenticator(_base + "/allow"), "client-9", "ldap-user", "pä$$ word");
        Assert.Equal(MqttAuthOutcome.Allow, result.Outcome);
        Assert.Equal(new MqttIdentity(MqttPrincipalKind.External, "ldap-user", result.Identity!.Grants), result.Identity);
        Assert.Empty(result.Identity.Grants);
        var call = Assert.Single(_calls);
        Assert.Equal("POST", call.Method);
        using var body = JsonDocument.Parse(call.Body);
        Assert.Equal("client-9", body.RootElement.GetProperty("clientid").GetString());
        Assert.Equal("ldap-user", body.RootElement.GetProperty("username").GetString());
        Assert.Equal("pä$$ word", body.RootElement.GetProperty("password").GetString());
        Assert.Equal("192.0.2.33", body.RootElement.GetProperty("ipaddress").GetString());
        Assert.Equal(4, body.RootElement.GetProperty("protocol").GetInt32());
        Assert.Equal(1, _metrics.HookCalls);
    }

    [Theory]
    [InlineData("GET")]
    [InlineData("get")]
    public void Get_IsRefusedAtStartup_ItWouldPutThePasswordInTheUrl(string method)
    {
        // Review L2: a GET hook sent the password in the query string, which access logs and proxies keep
        // (over https too), and http:// was accepted. POST carries the same fields in its body.
        var error = Assert.Throws<Relay.Server.Hosting.RelayConfigurationException>(() => Authenticator(_base + "/allow?tenant=a", method));
        Assert.Contains("Relay:Mqtt:AuthHook:Method", error.Message, StringComparison.Ordinal);
        Assert.Contains("POST", error.Message, StringComparison.Ordinal);
        Assert.Empty(_calls);
    }

    [Fact]
    public async Task TheHookUrl_IsLoggedWithoutItsUserInfoOrQuery()
    {
        // Review L2: the URL was logged whole, with any credentials it carries.
        var logger = new TestLogger();
        var url = _base.Replace("http://", "http://hook-user:hook-pa55word@", StringComparison.Ordinal) + "/error?apikey=s3cr3t-key";
        var result = await Auth(Authenticator(url, retries: 0, logger: logger), "c", "u", "p");
        Assert.Equal(MqttAuthOutcome.Unavailable, result.Outcome);
        var lines = logger.Entries.Select(static e => e.Message).ToList();
        Assert.Contains(lines, l => l.Contains(_base.Replace("http://", string.Empty, StringComparison.Ordinal) + "/error", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, static l => l.Contains("s3cr3t-key", StringComparison.Ordinal) || l.Contains("hook-pa55word", StringComparison.Ordinal) || l.Contains("hook-user", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("/deny")]
    [InlineData("/forbidden")]
    public async Task DenyOr4xx_IsBadCredentials_WithoutRetry(string path)
    {
        var result = await Auth(Authenticator(_base + path, retries: 3), "c", "u", "p");
        Assert.Equal(MqttAuthOutcome.BadCredentials, result.Outcome);
        Assert.Single(_calls);
    }

    [Fact]
    public async Task ServerErrorThenOk_IsRetried_AndAllowed()
    {
        var result = await Auth(Authenticator(_base + "/flaky", retries: 1), "c", "u", "p");
        Assert.Equal(MqttAuthOutcome.Allow, result.Outcome);
        Assert.Equal(2, _calls.Count);
        Assert.Equal(2, _metrics.HookAttempts);
        Assert.Equal(1, _metrics.HookErrors);
    }

    [Theory]
    [InlineData("/error")]
    [InlineData("/garbage")]
    [InlineData("/hang")]
    public async Task Failures_AfterRetries_AreUnavailable(string path)
    {
        var result = await Auth(Authenticator(_base + path, retries: 2, timeoutMs: 300), "c", "u", "p");
        Assert.Equal(MqttAuthOutcome.Unavailable, result.Outcome);
        Assert.Equal(3, _metrics.HookAttempts);
        Assert.Equal(3, _metrics.HookErrors);
        Assert.Equal(1, _metrics.HookResults(MqttAuthOutcome.Unavailable));
    }

    [Fact]
    public async Task ConnectionRefused_IsUnavailable()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop(); // nothing listens there now
        var result = await Auth(Authenticator($"http://127.0.0.1:{port}/allow", retries: 0), "c", "u", "p");
        Assert.Equal(MqttAuthOutcome.Unavailable, result.Outcome);
        Assert.Equal(1, _metrics.HookErrors);
    }

    [Fact]
    public async Task FallbackOnly_AsksTheHookOnlyForUnknownUsers()
    {
        var authenticator = Authenticator(_base + "/deny", fallbackOnly: true);
        Assert.Equal(MqttAuthOutcome.Allow, (await Auth(authenticator, "d1", "d1", "secret-1")).Outcome);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, "d1", "d1", "wrong")).Outcome);
        Assert.Empty(_calls);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, "x", "stranger", "p")).Outcome);
        Assert.Single(_calls);
    }

    [Fact]
    public async Task NotFallbackOnly_TheHookDecidesAlone()
    {
        var authenticator = Authenticator(_base + "/deny", fallbackOnly: false);
        Assert.Equal(MqttAuthOutcome.BadCredentials, (await Auth(authenticator, "d1", "d1", "secret-1")).Outcome);
        Assert.Single(_calls);
    }
}
