using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Api;

namespace Relay.Server.Tests.Push.Api;

public sealed class ApiAuthTests
{
    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> ReadJson(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

    private static async Task<(string Id, string Token)> CreateToken(HttpClient admin, string scopes)
    {
        var response = await admin.PostAsync("/v1/tokens", Json($$"""{"name":"t","scopes":{{scopes}}}"""));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await ReadJson(response);
        return (body.GetProperty("id").GetString()!, body.GetProperty("token").GetString()!);
    }

    [Fact]
    public async Task MissingOrUnknownToken_Is401WithBearerChallenge()
    {
        await using var server = await DeviceApiTests.StartAsync();
        foreach (var token in new[] { null, "wrong", new string('x', 5000) })
        {
            using var client = DeviceApiTests.Client(server, token);
            var response = await client.GetAsync("/v1/devices");
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task Scopes_ReadPushAdmin_AndRevocation()
    {
        await using var server = await DeviceApiTests.StartAsync();
        using var admin = DeviceApiTests.Client(server);
        var (readId, read) = await CreateToken(admin, """["read"]""");
        var (_, push) = await CreateToken(admin, """["push"]""");
        await Assert.ThrowsAnyAsync<Exception>(async () => await CreateToken(admin, """["root"]"""));

        using (var reader = DeviceApiTests.Client(server, read))
        {
            Assert.Equal(HttpStatusCode.OK, (await reader.GetAsync("/v1/devices")).StatusCode);
            var refused = await reader.PostAsync("/v1/devices", Json("""{"id":"x"}"""));
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("'admin' scope", (await ReadJson(refused)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        using (var pusher = DeviceApiTests.Client(server, push))
        {
            // push includes read: a back end that pushes must be able to read results.
            Assert.Equal(HttpStatusCode.OK, (await pusher.GetAsync("/v1/devices")).StatusCode);
            Assert.Equal(HttpStatusCode.Forbidden, (await pusher.GetAsync("/v1/tokens")).StatusCode);
        }

        var list = await admin.GetStringAsync("/v1/tokens");
        Assert.Contains(readId, list, StringComparison.Ordinal);
        Assert.DoesNotContain(read, list, StringComparison.Ordinal);

        // Only hashes on disk.
        var file = await File.ReadAllTextAsync(Path.Combine(server.DataDirectory, ApiTokenStore.FileName));
        Assert.DoesNotContain(read, file, StringComparison.Ordinal);
        Assert.DoesNotContain(push, file, StringComparison.Ordinal);

        Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync($"/v1/tokens/{readId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.DeleteAsync($"/v1/tokens/{readId}")).StatusCode);
        using var revoked = DeviceApiTests.Client(server, read);
        Assert.Equal(HttpStatusCode.Unauthorized, (await revoked.GetAsync("/v1/devices")).StatusCode);
    }

    [Fact]
    public async Task TokensSurviveRestart()
    {
        var dataDirectory = Directory.CreateTempSubdirectory("relay-api-").FullName;
        try
        {
            var store = ApiTokenStore.Load(dataDirectory, TimeProvider.System);
            var (info, token) = store.Create("ci", ApiScopes.Push);
            var reloaded = ApiTokenStore.Load(dataDirectory, TimeProvider.System);
            var found = reloaded.Find(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(token)));
            Assert.Equal((info.Id, ApiScopes.Push), found);
            Assert.Null(reloaded.Find(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(token + "x"))));
        }
        finally
        {
            Directory.Delete(dataDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task RateLimit_PerToken_Is429WithRetryAfter_AndCounted()
    {
        // One request per 1000 s after a burst of 2: the third request is refused however slow the machine.
        await using var server = await DeviceApiTests.StartAsync("Relay:Api:RateLimit:RequestsPerSecond=0.001", "Relay:Api:RateLimit:Burst=2");
        using var admin = DeviceApiTests.Client(server);
        var (_, other) = await CreateToken(admin, """["read"]""");
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/v1/devices")).StatusCode);
        var limited = await admin.GetAsync("/v1/devices");
        Assert.Equal((HttpStatusCode)429, limited.StatusCode);
        Assert.NotNull(limited.Headers.RetryAfter);
        Assert.Equal("application/problem+json", limited.Content.Headers.ContentType?.MediaType);

        // Another token has its own bucket.
        using var otherClient = DeviceApiTests.Client(server, other);
        Assert.Equal(HttpStatusCode.OK, (await otherClient.GetAsync("/v1/devices")).StatusCode);

        Assert.Equal(1, server.Services.GetRequiredService<ApiMetrics>().RateLimited);
        using var anonymous = DeviceApiTests.Client(server, token: null);
        Assert.Contains("relay_api_rejected_total{reason=\"rate_limited\"} 1", await anonymous.GetStringAsync("/metrics"), StringComparison.Ordinal);
    }
}
