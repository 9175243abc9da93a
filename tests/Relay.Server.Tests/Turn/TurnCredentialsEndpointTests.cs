using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Relay.Server.Tests.Turn;

/// <summary>GET /v1/turn/credentials: time-limited TURN credentials (draft-uberti-behave-turn-rest-00) for an admin caller.</summary>
public sealed class TurnCredentialsEndpointTests
{
    private const string Secret = "endpoint-secret";
    private const string Token = "test-admin-token-0123456789";

    [Fact]
    public async Task MintedCredentials_AreTheDraftsShape_AndWorkWithCoturnsClient()
    {
        await using var server = await RelayTestServer.StartAsync($"Relay:Turn:SharedSecrets:0={Secret}", $"Relay:Api:BootstrapToken={Token}", "Relay:Turn:AllowLoopbackPeers=true");
        using var http = Client(server, Token);

        using var response = await http.GetAsync("/v1/turn/credentials?user=device-7&ttl=600");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var username = json.RootElement.GetProperty("username").GetString()!;
        var password = json.RootElement.GetProperty("password").GetString()!;
        Assert.Equal(600, json.RootElement.GetProperty("ttl").GetInt32());
        var uris = json.RootElement.GetProperty("uris").EnumerateArray().Select(static u => u.GetString()).ToArray();
        Assert.Contains($"turn:127.0.0.1:{server.StunPort}?transport=udp", uris);
        Assert.Contains($"turn:127.0.0.1:{server.StunPort}?transport=tcp", uris);

        // Username "<unix expiry>:<user>", password base64(HMAC-SHA1(secret, username)).
        var parts = username.Split(':');
        Assert.Equal("device-7", parts[1]);
        var expiry = long.Parse(parts[0], CultureInfo.InvariantCulture);
        Assert.InRange(expiry - DateTimeOffset.UtcNow.ToUnixTimeSeconds(), 590, 610);
        Assert.Equal(Convert.ToBase64String(HMACSHA1.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(username))), password);

        // The proof that matters: a standard client authenticates with them and relays.
        var result = await ExternalTool.RunAsync("turnutils_uclient", "-y", "-c", "-m", "1", "-n", "10", "-u", username, "-w", password,
            "-p", server.StunPort.ToString(CultureInfo.InvariantCulture), "127.0.0.1");
        // -y with one client is two endpoints relaying to each other: 2 x 10 messages.
        Assert.Matches(@"tot_send_msgs=20, tot_recv_msgs=20\s*$", result.Output.Split('\n').Last(static l => l.Contains("tot_send_msgs", StringComparison.Ordinal)));
        Assert.Matches(@"Total lost packets 0 \(", result.Output);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("wrong-token")]
    public async Task WithoutAnAdminToken_Is401ProblemJson(string? token)
    {
        await using var server = await RelayTestServer.StartAsync($"Relay:Turn:SharedSecrets:0={Secret}", $"Relay:Api:BootstrapToken={Token}");
        using var http = Client(server, token);
        using var response = await http.GetAsync("/v1/turn/credentials");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("Bearer", response.Headers.WwwAuthenticate.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task WithoutASharedSecret_Is409_AndBadTtlIs400()
    {
        await using var server = await RelayTestServer.StartAsync($"Relay:Api:BootstrapToken={Token}");
        using var http = Client(server, Token);
        using var noSecret = await http.GetAsync("/v1/turn/credentials");
        Assert.Equal(HttpStatusCode.Conflict, noSecret.StatusCode);
        Assert.Contains("Relay:Turn:SharedSecrets", await noSecret.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        await using var withSecret = await RelayTestServer.StartAsync($"Relay:Turn:SharedSecrets:0={Secret}", $"Relay:Api:BootstrapToken={Token}");
        using var http2 = Client(withSecret, Token);
        using var badTtl = await http2.GetAsync("/v1/turn/credentials?ttl=0");
        Assert.Equal(HttpStatusCode.BadRequest, badTtl.StatusCode);
        using var badUser = await http2.GetAsync("/v1/turn/credentials?user=a:b");
        Assert.Equal(HttpStatusCode.BadRequest, badUser.StatusCode);
    }

    [Fact]
    public async Task FirstStart_MintsAnAdminToken_KeepsOnlyItsHash_AndItWorks()
    {
        await using var server = await RelayTestServer.StartAsync($"Relay:Turn:SharedSecrets:0={Secret}");
        var tokens = (Relay.Server.Api.AdminTokens)server.Services.GetService(typeof(Relay.Server.Api.AdminTokens))!;
        Assert.NotNull(tokens.GeneratedToken);
        var stored = (await File.ReadAllTextAsync(tokens.File)).Trim();
        Assert.DoesNotContain(tokens.GeneratedToken!, stored, StringComparison.Ordinal);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(tokens.GeneratedToken!))), stored);

        using var http = Client(server, tokens.GeneratedToken);
        using var response = await http.GetAsync("/v1/turn/credentials");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    private static HttpClient Client(RelayTestServer server, string? token)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{server.HttpPort}") };
        if (token is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return http;
    }
}
