using System.Globalization;
using System.Text.Json;
using Relay.Server.Tests.Mqtt.Interop;
using Relay.Server.Tests.Push.Commands;
using Relay.Server.Tests.RendezvousServer;

namespace Relay.Server.Tests.DeviceClientPeers;

/// <summary>
/// samples/PeerDemo as the NAT lab runs it: two processes against the in-process server, one --connect the
/// other; a line typed into one arrives as RECV in the other. Output prefixes are the contract (CONNECTED,
/// READY, PATH, RECV, SENT, ERROR; or --json).
/// </summary>
public sealed class PeerDemoTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private static string DemoDll => Path.Combine(RepoPaths.Root, "samples", "PeerDemo", "bin", "Release", "net10.0", "PeerDemo.dll");

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TwoPeerDemos_TypedLinesArriveBothWays_AndThePathIsReported(bool json)
    {
        await using var kit = await RendezvousTestKit.StartAsync(
            "Relay:Rendezvous:Policy=Any", "Relay:Turn:AllowLoopbackPeers=true", "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        string[] format = json ? ["--json"] : [];
        await using var listener = DemoProcess.Start(kit, "d2", format);
        await listener.WaitForAsync("connected", null);
        await using var caller = DemoProcess.Start(kit, "d1", ["--connect", "d2", .. format]);

        var ready = await caller.WaitForAsync("ready", null);
        Assert.Equal("d2", ready.Text("peer"));
        Assert.Equal("d1", (await listener.WaitForAsync("ready", null)).Text("peer"));
        Assert.Contains((await caller.WaitForAsync("path", null)).Text("path"), (string[])["relayed", "direct"]);

        await caller.TypeAsync("hello from d1");
        Assert.Equal("hello from d1", (await listener.WaitForAsync("recv", "hello from d1")).Text("text"));
        await caller.WaitForAsync("sent", "hello from d1");
        await listener.TypeAsync("hello from d2");
        Assert.Equal("hello from d2", (await caller.WaitForAsync("recv", "hello from d2")).Text("text"));

        // Loopback: both upgrade to the direct path and say so.
        await caller.WaitForAsync("path", "direct");
        await listener.WaitForAsync("path", "direct");
        Assert.DoesNotContain(caller.Lines.Concat(listener.Lines), static l => l.Event == "error");
    }

    /// <summary>One PeerDemo with stdin kept open, its stdout lines read as events.</summary>
    private sealed class DemoProcess(ToolProcess process, bool json) : IAsyncDisposable
    {
        public IReadOnlyList<DemoLine> Lines => [.. process.StdoutLines.Select(l => DemoLine.Parse(l, json))];

        public static DemoProcess Start(RendezvousTestKit kit, string device, string[] extra)
        {
            var process = ToolProcess.Start(
                "dotnet",
                [
                    DemoDll,
                    "--server", $"mqtt://127.0.0.1:{kit.Server.MqttPort.ToString(CultureInfo.InvariantCulture)}",
                    "--device", device, "--secret", PushTestKit.Secret, "--allow-loopback", .. extra,
                ],
                TimeSpan.FromMinutes(5),
                Path.GetDirectoryName(DemoDll),
                keepInputOpen: true);
            return new DemoProcess(process, extra.Contains("--json"));
        }

        public Task TypeAsync(string line) => process.WriteLineAsync(line);

        /// <summary>The first line of <paramref name="event"/> (whose text contains <paramref name="contains"/>), seen or to come; bounded.</summary>
        public async Task<DemoLine> WaitForAsync(string @event, string? contains)
        {
            var line = await process.WaitForLineAsync(
                raw => DemoLine.Parse(raw, json).Event == @event && (contains is null || raw.Contains(contains, StringComparison.Ordinal)),
                $"{@event} {contains}",
                Bound);
            return DemoLine.Parse(line, json);
        }

        public async ValueTask DisposeAsync()
        {
            // Closing stdin is the demo's own way to end (EOF); kill only if it does not.
            await process.CloseInputAsync(TimeSpan.FromSeconds(10));
            await process.DisposeAsync();
        }
    }

    /// <summary>One output line: "PREFIX text" or, with --json, {"event": "...", fields}.</summary>
    private sealed record DemoLine(string Event, string Raw, Dictionary<string, string> Fields)
    {
        public static DemoLine Parse(string raw, bool json)
        {
            if (json && raw.StartsWith('{'))
            {
                using var document = JsonDocument.Parse(raw);
                var fields = document.RootElement.EnumerateObject().ToDictionary(static p => p.Name, static p => p.Value.GetString() ?? string.Empty);
                return new DemoLine(fields.GetValueOrDefault("event", string.Empty), raw, fields);
            }

            var space = raw.IndexOf(' ', StringComparison.Ordinal);
            var prefix = space < 0 ? raw : raw[..space];
            var text = space < 0 ? string.Empty : raw[(space + 1)..];
            return new DemoLine(prefix.ToLowerInvariant(), raw, new Dictionary<string, string> { ["text"] = text });
        }

        /// <summary>A JSON field, or in text mode the word the field stands for.</summary>
        public string Text(string field)
        {
            if (Fields.Count > 1 || field == "text")
            {
                return Fields.GetValueOrDefault(field, string.Empty);
            }

            // Text lines: READY "peer path", PATH "path remote rtt".
            var words = Fields["text"].Split(' ');
            return (Event, field) switch
            {
                ("ready", "peer") => words[0],
                ("ready", "path") or ("path", "path") => words[0 + (Event == "ready" ? 1 : 0)],
                _ => Fields["text"],
            };
        }
    }
}
