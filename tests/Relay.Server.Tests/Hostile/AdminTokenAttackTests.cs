using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Api;
using Relay.Server.Hosting;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's L3: the bootstrap admin token could be anything (the README used
/// <c>admin-demo-token</c>), wrong bearer tokens could be tried without limit, the generated admin token
/// stayed valid forever (even after a bootstrap token was set), and <c>/v1/turn/credentials</c> skipped the
/// rate limit and wrote the request's Host header into the URIs it hands out.
/// </summary>
public sealed class AdminTokenAttackTests
{
    private const string Token = "hostile-admin-token-0123456789";

    [Theory]
    [InlineData("admin-demo-token")]
    [InlineData("12345678901234567890123")]
    [InlineData("has space 12345678901234567890")]
    public async Task AWeakBootstrapToken_StopsTheStart_NamingTheKey(string token)
    {
        var error = await Assert.ThrowsAsync<RelayConfigurationException>(() => RelayTestServer.StartAsync($"Relay:Api:BootstrapToken={token}"));
        Assert.Contains("Relay:Api:BootstrapToken", error.Message, StringComparison.Ordinal);
        Assert.Contains("24", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(token, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongBearerTokens_AreLimitedPerSource_AfterWhichEvenTheRightTokenWaits()
    {
        // A clock that does not move: the source's budget (10 failures a minute) cannot refill under the test.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await RelayTestServer.StartAsync(s => s.AddSingleton<TimeProvider>(clock), $"Relay:Api:BootstrapToken={Token}", "Relay:Http:ListenAddresses:1=::1");
        using var guesser = Client($"http://127.0.0.1:{server.HttpPort}", "guess");
        for (var i = 0; i < 10; i++)
        {
            using var refused = await guesser.GetAsync("/v1/devices");
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }

        // The budget is spent: the next guess is not even checked, and neither is the right token from there.
        using (var limited = await guesser.GetAsync("/v1/devices"))
        {
            Assert.Equal((HttpStatusCode)429, limited.StatusCode);
            Assert.NotNull(limited.Headers.RetryAfter);
            Assert.Equal("application/problem+json", limited.Content.Headers.ContentType?.MediaType);
        }

        using (var right = Client($"http://127.0.0.1:{server.HttpPort}", Token))
        {
            Assert.Equal((HttpStatusCode)429, (await right.GetAsync("/v1/devices")).StatusCode);
            Assert.Equal((HttpStatusCode)429, (await right.GetAsync("/v1/turn/credentials")).StatusCode);
        }

        // Another source has its own budget.
        using (var other = Client($"http://[::1]:{server.HttpPort}", Token))
        {
            Assert.Equal(HttpStatusCode.OK, (await other.GetAsync("/v1/devices")).StatusCode);
        }

        Assert.Contains("relay_api_rejected_total{reason=\"auth_failures\"} 3", await guesser.GetStringAsync("/metrics"), StringComparison.Ordinal);

        // A minute later the source may try again.
        clock.Advance(TimeSpan.FromMinutes(1));
        using (var right = Client($"http://127.0.0.1:{server.HttpPort}", Token))
        {
            Assert.Equal(HttpStatusCode.OK, (await right.GetAsync("/v1/devices")).StatusCode);
        }
    }

    [Fact]
    public async Task SettingABootstrapToken_RevokesTheGeneratedOne_ForGood()
    {
        var data = Directory.CreateTempSubdirectory("relay-admin-").FullName;
        try
        {
            string generated;
            await using (var first = await RelayTestServer.StartAsync($"Relay:DataDirectory={data}"))
            {
                generated = first.Services.GetRequiredService<AdminTokens>().GeneratedToken!;
                Assert.NotNull(generated);
                using var admin = Client($"http://127.0.0.1:{first.HttpPort}", generated);
                Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/v1/devices")).StatusCode);
            }

            await using (var second = await RelayTestServer.StartAsync($"Relay:DataDirectory={data}", $"Relay:Api:BootstrapToken={Token}"))
            {
                using var old = Client($"http://127.0.0.1:{second.HttpPort}", generated);
                Assert.Equal(HttpStatusCode.Unauthorized, (await old.GetAsync("/v1/devices")).StatusCode);
                using var bootstrap = Client($"http://127.0.0.1:{second.HttpPort}", Token);
                Assert.Equal(HttpStatusCode.OK, (await bootstrap.GetAsync("/v1/devices")).StatusCode);
            }

            // Unset again: a new token is minted; the revoked one does not come back.
            await using (var third = await RelayTestServer.StartAsync($"Relay:DataDirectory={data}"))
            {
                var minted = third.Services.GetRequiredService<AdminTokens>().GeneratedToken;
                Assert.NotNull(minted);
                Assert.NotEqual(generated, minted);
                using var old = Client($"http://127.0.0.1:{third.HttpPort}", generated);
                Assert.Equal(HttpStatusCode.Unauthorized, (await old.GetAsync("/v1/devices")).StatusCode);
            }
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task TurnCredentials_DoNotEchoTheHostHeader_AndAreRateLimited()
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Turn:SharedSecrets:0=turn-rest-secret", $"Relay:Api:BootstrapToken={Token}", "Relay:Api:RateLimit:RequestsPerSecond=0.001", "Relay:Api:RateLimit:Burst=2");
        using var http = Client($"http://127.0.0.1:{server.HttpPort}", Token);
        using (var request = new HttpRequestMessage(HttpMethod.Get, "/v1/turn/credentials?user=device-7"))
        {
            request.Headers.Host = "attacker.example";
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            var uris = json.RootElement.GetProperty("uris").EnumerateArray().Select(static u => u.GetString()!).ToList();
            Assert.DoesNotContain(uris, static u => u.Contains("attacker", StringComparison.Ordinal));
            Assert.Contains($"turn:127.0.0.1:{server.StunPort}?transport=udp", uris);
        }

        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/v1/turn/credentials?user=device-7")).StatusCode);
        using var third = await http.GetAsync("/v1/turn/credentials?user=device-7");
        Assert.Equal((HttpStatusCode)429, third.StatusCode);
        Assert.NotNull(third.Headers.RetryAfter);
    }

    private static HttpClient Client(string baseAddress, string? token)
    {
        var client = new HttpClient { BaseAddress = new Uri(baseAddress), Timeout = TimeSpan.FromSeconds(60) };
        if (token is not null)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return client;
    }
}
