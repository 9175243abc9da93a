using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Tests.Push.Api;

public sealed class DeviceApiTests
{
    internal const string Admin = "test-admin-token-0123456789";

    internal static HttpClient Client(RelayTestServer server, string? token = Admin)
    {
        var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{server.HttpPort}") };
        if (token is not null)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return client;
    }

    internal static Task<RelayTestServer> StartAsync(params string[] settings) =>
        RelayTestServer.StartAsync([$"Relay:Api:BootstrapToken={Admin}", .. settings]);

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> ReadJson(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

    private static async Task AssertProblem(HttpResponseMessage response, HttpStatusCode status, string detailContains)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await ReadJson(response);
        Assert.Equal((int)status, problem.GetProperty("status").GetInt32());
        Assert.Contains(detailContains, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_Get_Tags_Rotate_Delete_WithOfflinePresenceFallback()
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        var created = await client.PostAsync("/v1/devices", Json("""{"id":"sensor-1","tags":["lab","floor:2"]}"""));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var credentials = await ReadJson(created);
        Assert.Equal("sensor-1", credentials.GetProperty("id").GetString());
        var secret = credentials.GetProperty("secret").GetString()!;
        var registry = server.Services.GetRequiredService<IDeviceRegistry>();
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("sensor-1", Encoding.UTF8.GetBytes(secret), CancellationToken.None));

        await AssertProblem(await client.PostAsync("/v1/devices", Json("""{"id":"sensor-1"}""")), HttpStatusCode.Conflict, "already registered");

        var device = await ReadJson(await client.GetAsync("/v1/devices/sensor-1"));
        Assert.Equal(["lab", "floor:2"], device.GetProperty("tags").EnumerateArray().Select(t => t.GetString()));
        Assert.False(device.GetProperty("online").GetBoolean());
        Assert.Equal(JsonValueKind.Null, device.GetProperty("lastSeen").ValueKind);
        Assert.Equal(JsonValueKind.Null, device.GetProperty("protocolVersion").ValueKind);

        var tagged = await client.PutAsync("/v1/devices/sensor-1/tags", Json("""{"tags":["roof"]}"""));
        Assert.Equal(HttpStatusCode.OK, tagged.StatusCode);
        Assert.Equal(["roof"], (await ReadJson(tagged)).GetProperty("tags").EnumerateArray().Select(t => t.GetString()));

        var rotated = await ReadJson(await client.PostAsync("/v1/devices/sensor-1/secret", null));
        var newSecret = rotated.GetProperty("secret").GetString()!;
        Assert.NotEqual(secret, newSecret);
        Assert.Equal(SecretCheck.Mismatch, await registry.VerifySecretAsync("sensor-1", Encoding.UTF8.GetBytes(secret), CancellationToken.None));
        Assert.Equal(SecretCheck.Match, await registry.VerifySecretAsync("sensor-1", Encoding.UTF8.GetBytes(newSecret), CancellationToken.None));

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync("/v1/devices/sensor-1")).StatusCode);
        await AssertProblem(await client.GetAsync("/v1/devices/sensor-1"), HttpStatusCode.NotFound, "POST /v1/devices");
        await AssertProblem(await client.DeleteAsync("/v1/devices/sensor-1"), HttpStatusCode.NotFound, "sensor-1");
        await AssertProblem(await client.PostAsync("/v1/devices/sensor-1/secret", null), HttpStatusCode.NotFound, "sensor-1");
        await AssertProblem(await client.PutAsync("/v1/devices/sensor-1/tags", Json("""{"tags":[]}""")), HttpStatusCode.NotFound, "sensor-1");
    }

    [Fact]
    public async Task List_PagesByCursor_FiltersByTagAndOnline()
    {
        await using var server = await StartAsync();
        using var client = Client(server);
        for (var i = 0; i < 5; i++)
        {
            var tags = i % 2 == 0 ? """["even"]""" : "[]";
            Assert.Equal(HttpStatusCode.Created, (await client.PostAsync("/v1/devices", Json($$"""{"id":"d{{i}}","tags":{{tags}}}"""))).StatusCode);
        }

        var ids = new List<string>();
        string? after = null;
        var pages = 0;
        do
        {
            var page = await ReadJson(await client.GetAsync($"/v1/devices?limit=2{(after is null ? string.Empty : "&after=" + after)}"));
            ids.AddRange(page.GetProperty("items").EnumerateArray().Select(d => d.GetProperty("id").GetString()!));
            after = page.GetProperty("next").GetString();
            pages++;
        }
        while (after is not null);
        Assert.Equal(["d0", "d1", "d2", "d3", "d4"], ids);
        Assert.Equal(3, pages);

        var even = await ReadJson(await client.GetAsync("/v1/devices?tag=even"));
        Assert.Equal(["d0", "d2", "d4"], even.GetProperty("items").EnumerateArray().Select(d => d.GetProperty("id").GetString()));

        // The fallback presence says everyone is offline.
        Assert.Empty((await ReadJson(await client.GetAsync("/v1/devices?online=true"))).GetProperty("items").EnumerateArray());
        Assert.Equal(5, (await ReadJson(await client.GetAsync("/v1/devices?online=false&limit=10"))).GetProperty("items").GetArrayLength());

        await AssertProblem(await client.GetAsync("/v1/devices?limit=0"), HttpStatusCode.BadRequest, "'limit'");
        await AssertProblem(await client.GetAsync("/v1/devices?online=maybe"), HttpStatusCode.BadRequest, "'online'");
        await AssertProblem(await client.GetAsync("/v1/devices?tag=a%20b"), HttpStatusCode.BadRequest, "'tag'");
    }

    [Fact]
    public async Task BadBodies_Get400_WithWhatToSend_AndOversizedGets413()
    {
        await using var server = await StartAsync("Relay:Api:MaxRequestBodyBytes=1024");
        using var client = Client(server);
        await AssertProblem(await client.PostAsync("/v1/devices", Json("{not json")), HttpStatusCode.BadRequest, "not valid JSON");
        await AssertProblem(await client.PostAsync("/v1/devices", Json(string.Empty)), HttpStatusCode.BadRequest, "Send a JSON body");
        await AssertProblem(await client.PostAsync("/v1/devices", Json("""{"id":"a/b"}""")), HttpStatusCode.BadRequest, "'id' must match");
        await AssertProblem(await client.PostAsync("/v1/devices", Json("""{"id":"ok","tags":["has space"]}""")), HttpStatusCode.BadRequest, "'tags'");
        await AssertProblem(await client.PutAsync("/v1/devices/ok/tags", Json("{}")), HttpStatusCode.BadRequest, "'tags' is required");

        var big = $$"""{"id":"x","tags":["{{new string('a', 2000)}}"]}""";
        await AssertProblem(await client.PostAsync("/v1/devices", Json(big)), HttpStatusCode.RequestEntityTooLarge, "MaxRequestBodyBytes");

        // Chunked: no Content-Length to check up front, cut off while reading.
        using var chunked = new HttpRequestMessage(HttpMethod.Post, "/v1/devices") { Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big))) };
        chunked.Headers.TransferEncodingChunked = true;
        await AssertProblem(await client.SendAsync(chunked), HttpStatusCode.RequestEntityTooLarge, "MaxRequestBodyBytes");
        Assert.Null(await server.Services.GetRequiredService<IDeviceRegistry>().FindAsync("x", CancellationToken.None));
    }

    [Fact]
    public async Task OpenApiDocument_ListsEveryMappedV1Route()
    {
        await using var server = await StartAsync();
        using var anonymous = Client(server, token: null);
        var response = await anonymous.GetAsync("/openapi.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var paths = (await ReadJson(response)).GetProperty("paths");

        var routes = server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.RoutePattern.RawText?.StartsWith("/v1/", StringComparison.Ordinal) == true)
            .SelectMany(e => (e.Metadata.GetMetadata<HttpMethodMetadata>()?.HttpMethods ?? []).Select(m => (Path: e.RoutePattern.RawText!, Method: m.ToLowerInvariant())))
            .ToList();
        Assert.Contains(routes, r => r.Path == "/v1/devices/{id}/tags");
        foreach (var (path, method) in routes)
        {
            Assert.True(paths.TryGetProperty(path, out var item), $"{path} is mapped but missing from openapi.json");
            Assert.True(item.TryGetProperty(method, out _), $"{method.ToUpperInvariant()} {path} is mapped but missing from openapi.json");
        }
    }
}
