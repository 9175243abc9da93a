using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Hosting;
using Relay.Server.Tests.Push.Api;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Slowloris and connection floods on the HTTP port (review L6, the HTTP residual): a client that trickles its
/// request headers is closed when <c>Relay:Http:RequestHeadersTimeoutSeconds</c> runs out, and counted;
/// connections past <c>MaxConnections</c> or <c>MaxConnectionsPerIp</c> are closed on arrival, and counted;
/// the API keeps answering everyone else throughout. Request bodies are capped by <c>MaxRequestBodyBytes</c>,
/// except where an endpoint takes more (a command up to <c>Relay:Push:MaxPayloadBytes</c>).
/// </summary>
public sealed class HttpLimitsTests
{
    private static readonly IPAddress Attacker = IPAddress.Parse("127.0.0.2");

    [Fact]
    public async Task TricklingHeaders_AreClosedByTheHeaderTimeout_Counted_AndTheApiAnswersMeanwhile()
    {
        const int slowClients = 40;
        await using var server = await DeviceApiTests.StartAsync("Relay:Http:RequestHeadersTimeoutSeconds=2", "Relay:Http:MaxConnectionsPerIp=1000");
        var guard = server.Services.GetRequiredService<HttpConnectionGuard>();
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.HttpPort);

        var slow = Enumerable.Range(0, slowClients).Select(_ => TrickleHeadersUntilClosedAsync(endpoint)).ToArray();
        await Poll.UntilAsync(() => guard.Open >= slowClients, "the trickling clients to be connected", TimeSpan.FromSeconds(30));

        // Served while every trickler holds a connection.
        using var client = DeviceApiTests.Client(server);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);

        // Every trickler was closed by the server before its headers were complete: none got an answer to its request.
        var answered = await Task.WhenAll(slow);
        Assert.DoesNotContain(true, answered);
        await Poll.UntilAsync(
            () => guard.ErrorCount("request_headers_timeout") >= slowClients,
            $"{slowClients} connections counted as request_headers_timeout (counted {guard.ErrorCount("request_headers_timeout")})",
            TimeSpan.FromSeconds(30));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public async Task ConnectionsPastThePerAddressCap_AreRefused_Counted_AndOtherAddressesServed()
    {
        const int cap = 5;
        await using var server = await DeviceApiTests.StartAsync($"Relay:Http:MaxConnectionsPerIp={cap}");
        var guard = server.Services.GetRequiredService<HttpConnectionGuard>();
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.HttpPort);

        var held = new List<TcpClient>();
        try
        {
            for (var i = 0; i < cap; i++)
            {
                held.Add(await ConnectFromAsync(Attacker, endpoint));
            }

            await Poll.UntilAsync(() => guard.Open >= cap, "the attacker's connections to be open", TimeSpan.FromSeconds(30));
            Assert.False(await IsAnsweredAsync(Attacker, endpoint), "a connection past the per-address cap was served");
            Assert.True(MetricValue(server, "relay_http_connections_refused_total{reason=\"ip_cap\"}") >= 1, "the refusal was not counted");

            // Another address is served while the attacker holds its share.
            Assert.True(await IsAnsweredAsync(IPAddress.Loopback, endpoint), "a client from another address was not served");
        }
        finally
        {
            held.ForEach(static c => c.Dispose());
        }

        // Its connections closed, the attacker's address may connect again.
        await Poll.UntilAsync(() => guard.Open == 0, "the attacker's connections to be released", TimeSpan.FromSeconds(30));
        Assert.True(await IsAnsweredAsync(Attacker, endpoint), "the address was not let in again after its connections closed");
    }

    [Fact]
    public async Task ConnectionsPastTheServerCap_AreRefused_AndCounted()
    {
        const int cap = 8;
        await using var server = await DeviceApiTests.StartAsync($"Relay:Http:MaxConnections={cap}");
        var guard = server.Services.GetRequiredService<HttpConnectionGuard>();
        var endpoint = new IPEndPoint(IPAddress.Loopback, server.HttpPort);

        var held = new List<TcpClient>();
        try
        {
            for (var i = 0; i < cap; i++)
            {
                held.Add(await ConnectFromAsync(IPAddress.Parse($"127.0.0.{10 + i}"), endpoint));
            }

            await Poll.UntilAsync(() => guard.Open >= cap, "the connections to reach the cap", TimeSpan.FromSeconds(30));
            Assert.False(await IsAnsweredAsync(Attacker, endpoint), "a connection past the server's cap was served");
        }
        finally
        {
            held.ForEach(static c => c.Dispose());
        }

        await Poll.UntilAsync(() => guard.Open == 0, "the held connections to be released", TimeSpan.FromSeconds(30));
        Assert.True(await IsAnsweredAsync(IPAddress.Loopback, endpoint), "no client was served once the connections closed");

        // Read once a connection is free again: /metrics is on the same port.
        Assert.True(MetricValue(server, "relay_http_connections_refused_total{reason=\"connection_cap\"}") >= 1, "the refusal was not counted");
    }

    [Fact]
    public async Task Bodies_AreCappedByMaxRequestBodyBytes_ButACommandMayCarryItsOwnMaximum()
    {
        await using var server = await DeviceApiTests.StartAsync("Relay:Http:MaxRequestBodyBytes=65536", "Relay:Push:MaxPayloadBytes=262144");
        using var client = DeviceApiTests.Client(server);
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsync("/v1/devices", Json("""{"id":"valve-1"}"""))).StatusCode);

        // 100 KB of tags: past the server-wide cap.
        var tags = string.Join(',', Enumerable.Range(0, 10_000).Select(static i => $"\"t{i:D5}\""));
        // Refused either way: a 413, or the connection closed while the client was still sending the body.
        try
        {
            var tooLarge = await client.PutAsync("/v1/devices/valve-1/tags", Json($$"""{"tags":[{{tags}}]}"""));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        }
        catch (HttpRequestException e) when (e.InnerException is HttpIOException or IOException)
        {
        }

        using var fresh = DeviceApiTests.Client(server);
        Assert.Empty((await fresh.GetFromJsonAsync<System.Text.Json.JsonElement>("/v1/devices/valve-1")).GetProperty("tags").EnumerateArray());

        // A 200 KB command payload: within Relay:Push:MaxPayloadBytes, so accepted although past the server-wide cap.
        var payload = new string('a', 200_000);
        var command = await fresh.PostAsync("/v1/devices/valve-1/commands", Json($$"""{"name":"big","payload":"{{payload}}","ttlSeconds":60}"""));
        Assert.Equal(HttpStatusCode.Accepted, command.StatusCode);
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static double MetricValue(RelayTestServer server, string series)
    {
        using var client = DeviceApiTests.Client(server, token: null);
        var text = client.GetStringAsync("/metrics").GetAwaiter().GetResult();
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        return line is null ? 0 : double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task<TcpClient> ConnectFromAsync(IPAddress local, IPEndPoint endpoint)
    {
        var tcp = new TcpClient(new IPEndPoint(local, 0)) { NoDelay = true };
        await tcp.ConnectAsync(endpoint);
        return tcp;
    }

    /// <summary>True when a GET /healthz from <paramref name="local"/> gets a status line; false when the server closes first.</summary>
    private static async Task<bool> IsAnsweredAsync(IPAddress local, IPEndPoint endpoint)
    {
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            using var tcp = await ConnectFromAsync(local, endpoint);
            var stream = tcp.GetStream();
            await stream.WriteAsync("GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"u8.ToArray(), bound.Token);
            var buffer = new byte[64];
            var read = await stream.ReadAsync(buffer, bound.Token);
            return read > 0 && Encoding.ASCII.GetString(buffer, 0, read).StartsWith("HTTP/1.1 200", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Sends a request's headers one byte a second, never ending them; true only if the server answered anything.</summary>
    private static async Task<bool> TrickleHeadersUntilClosedAsync(IPEndPoint endpoint)
    {
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        using var tcp = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true };
        try
        {
            await tcp.ConnectAsync(endpoint, bound.Token);
            var stream = tcp.GetStream();
            var answer = new byte[256];
            var read = stream.ReadAsync(answer, bound.Token).AsTask();
            var headers = Encoding.ASCII.GetBytes("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: " + new string('x', 200));
            foreach (var b in headers)
            {
                // The attacker's pace, not a synchronisation: one byte, then a second's pause, unless closed.
                if (await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(1), bound.Token)) == read)
                {
                    return IsServed(answer, await read);
                }

                await stream.WriteAsync(new[] { b }, bound.Token);
            }

            return IsServed(answer, await read);
        }
        catch (IOException)
        {
            return false;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    // Kestrel may answer a timed-out request with a 408 before it closes: a refusal, not service.
    private static bool IsServed(byte[] answer, int length) =>
        length > 0 && Encoding.ASCII.GetString(answer, 0, length).StartsWith("HTTP/1.1 200", StringComparison.Ordinal);
}
