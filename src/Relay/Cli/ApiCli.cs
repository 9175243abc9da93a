using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Relay.Server.Cli;

/// <summary>
/// <c>relay api ...</c>: the operator API from the command line. Unlike <c>relay devices</c>, which
/// opens the data directory, these call a running server over HTTP, so they work from any machine
/// with a token. Exit codes: 0 ok, 1 the server refused or the command did not succeed, 2 usage,
/// 3 server unreachable, 4 bad or missing token.
/// </summary>
internal static class ApiCli
{
    public const string DefaultServer = "http://127.0.0.1:8080";
    public const string TokenVariable = "RELAY_TOKEN";

    /// <summary>What a usage mistake prints.</summary>
    public const string Usage = """
        usage: relay api devices add <id> [--tag T]...           register a device; prints its secret once
               relay api devices list [--online true|false] [--tag T]   devices with presence
               relay api token create --scope read|push|admin [--scope ...] [--name N]   prints the token once
               relay api push <device> <name> [payload-json] [--wait SECONDS] [--ttl SECONDS]
                                                                 send a command; with --wait, print its final state and result
        options: --server URL (default http://127.0.0.1:8080)
                 --token TOKEN (default: the RELAY_TOKEN environment variable)
        """;

    private static readonly string[] FinalStates = ["succeeded", "failed", "expired", "canceled"];

    private delegate Task<int> ClientCall(Client client, ParseResult parsed, CancellationToken cancellationToken);

    /// <summary>The <c>api</c> command; <paramref name="environment"/> supplies <c>RELAY_TOKEN</c> when <c>--token</c> is not given.</summary>
    public static Command CreateCommand(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var server = new Option<string>("--server") { Description = $"The server's HTTP port (Relay:Http:Port), default {DefaultServer}.", Recursive = true };
        var token = new Option<string>("--token") { Description = $"An API token (default: the {TokenVariable} environment variable).", Recursive = true };

        var deviceId = new Argument<string>("id") { Description = "Device id." };
        var tags = new Option<string[]>("--tag") { Description = "A tag for the device (repeatable)." };
        var add = new Command("add", "Register a device; prints its secret once.") { deviceId, tags };
        Bind(add, (client, parsed, ct) => client.AddDeviceAsync(parsed.GetRequiredValue(deviceId), [.. parsed.GetValue(tags) ?? []], ct));

        var online = new Option<string>("--online") { Description = "true or false: only devices online, or offline." };
        var tag = new Option<string>("--tag") { Description = "Only devices with this tag." };
        var list = new Command("list", "Devices with their presence.") { online, tag };
        Bind(list, (client, parsed, ct) => client.ListDevicesAsync(parsed.GetValue(online), parsed.GetValue(tag), ct));

        var scopes = new Option<string[]>("--scope") { Description = "read, push or admin (repeatable; at least one)." };
        var name = new Option<string>("--name") { Description = "A name to recognise the token by." };
        var create = new Command("create", "Create an API token; prints it once.") { scopes, name };
        Bind(create, (client, parsed, ct) => client.CreateTokenAsync([.. parsed.GetValue(scopes) ?? []], parsed.GetValue(name), ct));

        var device = new Argument<string>("device") { Description = "Device id." };
        var commandName = new Argument<string>("name") { Description = "Command name." };
        var payload = new Argument<string?>("payload-json") { Description = "The command's payload, JSON (quote it for the shell).", Arity = ArgumentArity.ZeroOrOne };
        var wait = new Option<string>("--wait") { Description = "Seconds to wait for the final state; prints it and the result." };
        var ttl = new Option<string>("--ttl") { Description = "Seconds the command may wait for the device." };
        var push = new Command("push", "Send a command to a device.") { device, commandName, payload, wait, ttl };
        Bind(push, (client, parsed, ct) => client.PushAsync(parsed.GetRequiredValue(device), parsed.GetRequiredValue(commandName), parsed.GetValue(payload), parsed.GetValue(wait), parsed.GetValue(ttl), ct));

        return new Command("api", "Call a running server's operator API over HTTP with a bearer token.")
        {
            server,
            token,
            new Command("devices", "Devices.") { add, list },
            new Command("token", "API tokens.") { create },
            push,
        };

        void Bind(Command command, ClientCall call) =>
            command.SetAction((parsed, cancellationToken) => RunAsync(parsed, parsed.GetValue(server), parsed.GetValue(token) ?? environment(TokenVariable), call, cancellationToken));
    }

    /// <summary>Runs <paramref name="args"/> (args[0] is "api"); returns the exit code.</summary>
    public static Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, Func<string, string?>? environment = null, CancellationToken cancellationToken = default) =>
        CommandLineRunner.RunAsync(new RootCommand { CreateCommand(environment) }, args, output, error, Usage, cancellationToken);

    private static async Task<int> RunAsync(ParseResult parsed, string? server, string? token, ClientCall call, CancellationToken cancellationToken)
    {
        var output = parsed.InvocationConfiguration.Output;
        var error = parsed.InvocationConfiguration.Error;
        server ??= DefaultServer;
        if (!Uri.TryCreate(server, UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https"))
        {
            await error.WriteLineAsync($"relay: --server must be an http or https URL (was '{server}')");
            return 2;
        }

        if (string.IsNullOrEmpty(token))
        {
            await error.WriteLineAsync($"relay: no API token: pass --token TOKEN or set {TokenVariable} (the admin token is printed at the server's first start)");
            return 4;
        }

        using var http = new HttpClient { BaseAddress = baseUri, Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        try
        {
            return await call(new Client(http, baseUri, output, error), parsed, cancellationToken);
        }
        catch (HttpRequestException e) when (e.InnerException is SocketException or IOException || e.HttpRequestError is HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError)
        {
            await error.WriteLineAsync($"relay: cannot reach the server at {baseUri} ({e.Message}). Is it running? Point --server at its HTTP port (Relay:Http:Port).");
            return 3;
        }
        catch (UsageException e)
        {
            await error.WriteLineAsync($"relay: {e.Message}");
            return 2;
        }
    }

    private sealed class UsageException(string message) : Exception(message);

    private sealed class Client(HttpClient http, Uri server, TextWriter output, TextWriter error)
    {
        public async Task<int> AddDeviceAsync(string id, List<string> tags, CancellationToken cancellationToken)
        {
            var body = Json(w => WriteNameAndList(w, "id", id, "tags", tags));
            using var response = await http.PostAsync("/v1/devices", body, cancellationToken);
            if (await FailedAsync(response, "device", id) is { } code)
            {
                return code;
            }

            var created = await ReadAsync(response, cancellationToken);
            await output.WriteLineAsync($"added device {created.GetProperty("id").GetString()}; secret (shown once): {created.GetProperty("secret").GetString()}");
            await output.WriteLineAsync($"connect with MQTT client id and username '{id}' and that secret as the password; subscribe to devices/{id}/commands");
            return 0;
        }

        public async Task<int> ListDevicesAsync(string? online, string? tag, CancellationToken cancellationToken)
        {
            if (online is not null and not ("true" or "false"))
            {
                throw new UsageException($"--online must be true or false (was '{online}')");
            }

            string? after = null;
            await output.WriteLineAsync("ID\tONLINE\tLAST SEEN\tREMOTE\tMQTT\tNAT\tTAGS");
            do
            {
                var query = new StringBuilder("/v1/devices?limit=500");
                if (online is not null)
                {
                    query.Append("&online=").Append(online);
                }

                if (tag is not null)
                {
                    query.Append("&tag=").Append(Uri.EscapeDataString(tag));
                }

                if (after is not null)
                {
                    query.Append("&after=").Append(Uri.EscapeDataString(after));
                }

                using var response = await http.GetAsync(query.ToString(), cancellationToken);
                if (await FailedAsync(response, "device", null) is { } code)
                {
                    return code;
                }

                var page = await ReadAsync(response, cancellationToken);
                foreach (var d in page.GetProperty("items").EnumerateArray())
                {
                    var version = d.GetProperty("protocolVersion") is { ValueKind: JsonValueKind.Number } v ? (v.GetInt32() == 5 ? "5.0" : "3.1.1") : "-";
                    await output.WriteLineAsync(string.Join('\t',
                        d.GetProperty("id").GetString(),
                        d.GetProperty("online").GetBoolean() ? "online" : "offline",
                        d.GetProperty("lastSeen").ValueKind == JsonValueKind.Null ? "never" : d.GetProperty("lastSeen").GetDateTimeOffset().ToString("u", CultureInfo.InvariantCulture),
                        d.GetProperty("remoteAddress").GetString() ?? "-",
                        version,
                        d.TryGetProperty("nat", out var nat) && nat.ValueKind == JsonValueKind.String ? nat.GetString() : "-",
                        string.Join(',', d.GetProperty("tags").EnumerateArray().Select(static t => t.GetString()))));
                }

                after = page.GetProperty("next").GetString();
            }
            while (after is not null);
            return 0;
        }

        public async Task<int> CreateTokenAsync(List<string> scopes, string? name, CancellationToken cancellationToken)
        {
            if (scopes.Count == 0)
            {
                throw new UsageException("token create needs at least one --scope (read, push or admin)");
            }

            var body = Json(w => WriteNameAndList(w, "name", name ?? string.Empty, "scopes", scopes));
            using var response = await http.PostAsync("/v1/tokens", body, cancellationToken);
            if (await FailedAsync(response, "token", null) is { } code)
            {
                return code;
            }

            var created = await ReadAsync(response, cancellationToken);
            await output.WriteLineAsync($"token {created.GetProperty("id").GetString()} ({string.Join(", ", created.GetProperty("scopes").EnumerateArray().Select(static s => s.GetString()))}), shown once:");
            await output.WriteLineAsync(created.GetProperty("token").GetString());
            return 0;
        }

        public async Task<int> PushAsync(string device, string name, string? payload, string? waitText, string? ttlText, CancellationToken cancellationToken)
        {
            var wait = ParseSeconds(waitText, "--wait");
            var ttl = ParseSeconds(ttlText, "--ttl");
            JsonDocument? payloadJson = null;
            if (payload is not null)
            {
                try
                {
                    payloadJson = JsonDocument.Parse(payload);
                }
                catch (JsonException e)
                {
                    throw new UsageException($"the payload must be JSON (quote it for the shell, e.g. '{{\"ms\":500}}'): {e.Message}");
                }
            }

            using (payloadJson)
            {
                var body = Json(w =>
                {
                    w.WriteString("name", name);
                    if (payloadJson is not null)
                    {
                        w.WritePropertyName("payload");
                        payloadJson.RootElement.WriteTo(w);
                    }

                    if (ttl is { } t)
                    {
                        w.WriteNumber("ttlSeconds", t);
                    }
                });
                using var response = await http.PostAsync($"/v1/devices/{Uri.EscapeDataString(device)}/commands", body, cancellationToken);
                if (await FailedAsync(response, "device", device) is { } code)
                {
                    return code;
                }

                var accepted = await ReadAsync(response, cancellationToken);
                var id = (accepted.TryGetProperty("id", out var i) ? i : accepted.GetProperty("commandId")).GetString()!;
                await output.WriteLineAsync($"command {id} queued for {device}");
                if (wait is null or 0)
                {
                    return 0;
                }

                using var status = await http.GetAsync($"/v1/commands/{Uri.EscapeDataString(id)}?wait={wait}", cancellationToken);
                if (await FailedAsync(status, "command", id) is { } statusCode)
                {
                    return statusCode;
                }

                var command = await ReadAsync(status, cancellationToken);
                var state = (command.TryGetProperty("state", out var s) ? s : command.GetProperty("status")).GetString() ?? "unknown";
                var result = command.TryGetProperty("result", out var r) && r.ValueKind != JsonValueKind.Null ? " " + r.GetRawText() : string.Empty;
                if (!FinalStates.Contains(state))
                {
                    await output.WriteLineAsync($"command {id}: still {state} after {wait} s");
                    return 1;
                }

                await output.WriteLineAsync($"command {id}: {state}{result}");
                return state == "succeeded" ? 0 : 1;
            }
        }

        private static int? ParseSeconds(string? text, string option)
        {
            if (text is null)
            {
                return null;
            }

            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) && seconds <= 86_400
                ? seconds
                : throw new UsageException($"{option} must be whole seconds from 0 to 86400 (was '{text}')");
        }

        /// <summary>A string property and a string-array property: the shape of the device and token requests.</summary>
        private static void WriteNameAndList(Utf8JsonWriter writer, string name, string value, string listName, IEnumerable<string> items)
        {
            writer.WriteString(name, value);
            writer.WriteStartArray(listName);
            foreach (var item in items)
            {
                writer.WriteStringValue(item);
            }

            writer.WriteEndArray();
        }

        private static StringContent Json(Action<Utf8JsonWriter> write)
        {
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream))
            {
                writer.WriteStartObject();
                write(writer);
                writer.WriteEndObject();
            }

            return new StringContent(Encoding.UTF8.GetString(stream.ToArray()), Encoding.UTF8, "application/json");
        }

        private static async Task<JsonElement> ReadAsync(HttpResponseMessage response, CancellationToken cancellationToken)
        {
            using var document = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(cancellationToken), cancellationToken: cancellationToken);
            return document.RootElement.Clone();
        }

        /// <summary>Null on success; otherwise prints what went wrong, in the server's words when it sent a problem, and returns the exit code.</summary>
        private async Task<int?> FailedAsync(HttpResponseMessage response, string what, string? id)
        {
            if (response.IsSuccessStatusCode)
            {
                return null;
            }

            string? detail = null;
            if (response.Content.Headers.ContentType?.MediaType == "application/problem+json")
            {
                try
                {
                    using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                    detail = problem.RootElement.TryGetProperty("detail", out var d) ? d.GetString() : null;
                }
                catch (JsonException)
                {
                }
            }

            var status = (int)response.StatusCode;
            switch (response.StatusCode)
            {
                case HttpStatusCode.Unauthorized:
                    await error.WriteLineAsync($"relay: the server at {server} did not accept the token (401). Check --token or {TokenVariable}.");
                    return 4;
                case HttpStatusCode.Forbidden:
                    await error.WriteLineAsync($"relay: the token is not allowed to do this (403): {detail}");
                    return 4;
                case HttpStatusCode.NotFound when detail is null:
                    // No problem body: the route itself is missing, so this is not the Relay API (or an older server).
                    await error.WriteLineAsync($"relay: {server} has no {response.RequestMessage?.RequestUri?.AbsolutePath} endpoint (404). Is --server the Relay HTTP port, and is the server up to date?");
                    return 1;
                case HttpStatusCode.NotFound:
                    await error.WriteLineAsync(id is null ? $"relay: not found: {detail}" : $"relay: unknown {what} '{id}': {detail}");
                    return 1;
                default:
                    await error.WriteLineAsync($"relay: the server answered {status} {response.ReasonPhrase}{(detail is null ? string.Empty : ": " + detail)}");
                    return 1;
            }
        }
    }
}
