using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Relay.Protocol.Mqtt;
using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// The security review's M6 (MQTT part): what a stranger or a hostile client can make the MQTT listeners log
/// is throttled (the metric counts every event, the log gets a sample) and carries untrusted fields
/// length-capped and escaped, so no client can flood the log or forge a line.
/// </summary>
public sealed class LogFloodTests
{
    private const int Attempts = 1000;

    // Each throttled event kind may log once per 10 s; the run takes far less, so a handful at most.
    private const int MaxLines = 10;

    [Fact]
    public async Task AThousandMalformedConnects_LogABoundedNumberOfLines_AndCountEveryOne()
    {
        var logs = new LineCollector();
        await using var server = await EngineTestServer.StartAsync(s => s.AddSingleton<ILoggerProvider>(logs));
        var metrics = server.MqttMetrics();

        // CONNECT with the reserved flag set [MQTT-3.1.2-3]: malformed.
        byte[] malformed = [0x10, 0x0C, 0x00, 0x04, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x00];
        for (var i = 0; i < Attempts; i++)
        {
            var stranger = await MqttTestClient.OpenAsync(server.MqttPort);
            await using (stranger)
            {
                await stranger.SendRawAsync(malformed);
                Assert.Empty(await stranger.ReadUntilClosedAsync());
            }
        }

        await Poll.UntilAsync(() => metrics.Ends(MqttEndReason.MalformedPacket) == Attempts, $"{Attempts} malformed-packet ends to be counted");
        var lines = logs.Lines(static c => c.StartsWith("Relay.Server.Mqtt", StringComparison.Ordinal));
        Assert.True(lines.Count <= MaxLines, $"{lines.Count} MQTT log lines for {Attempts} malformed CONNECTs:\n" + string.Join('\n', lines.Take(20)));
        Assert.Contains(lines, static l => l.Contains("more since the last such line", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ClientIdsWithLineBreaks_CannotForgeLogLines()
    {
        var logs = new LineCollector();
        await using var server = await EngineTestServer.StartAsync(s => s.AddSingleton<ILoggerProvider>(logs));
        var metrics = server.MqttMetrics();

        // A client id a log reader would take for two lines, then a protocol error (PUBLISH with QoS 3,
        // [MQTT-3.3.1-4]) that the server logs with the client id.
        var forged = "evil\r\n2026-01-01 INFO forged line " + new string('A', 500);
        var (client, _) = await MqttTestClient.ConnectAsync(server.MqttPort, forged, MqttProtocolVersion.V311);
        await using (client)
        {
            await client.SendRawAsync(new byte[] { 0x36, 0x00 });
            Assert.Empty(await client.ReadUntilClosedAsync());
        }

        await Poll.UntilAsync(() => metrics.Ends(MqttEndReason.MalformedPacket) == 1, "the malformed PUBLISH to end the connection");
        var lines = logs.Lines(static c => c.StartsWith("Relay.Server.Mqtt", StringComparison.Ordinal));
        Assert.Contains(lines, static l => l.Contains(@"evil\x0d\x0a", StringComparison.Ordinal));
        Assert.All(lines, static l =>
        {
            Assert.DoesNotContain('\n', l);
            Assert.DoesNotContain('\r', l);
            Assert.DoesNotContain(new string('A', 100), l, StringComparison.Ordinal);
        });
    }

    /// <summary>Every formatted line at Information and above, with its category.</summary>
    private sealed class LineCollector : ILoggerProvider
    {
        private readonly ConcurrentQueue<(string Category, string Line)> _lines = new();

        public List<string> Lines(Func<string, bool> category) => [.. _lines.Where(l => category(l.Category)).Select(static l => l.Line)];

        public ILogger CreateLogger(string categoryName) => new Collector(categoryName, _lines);

        public void Dispose()
        {
        }

        private sealed class Collector(string category, ConcurrentQueue<(string, string)> lines) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (logLevel >= LogLevel.Information)
                {
                    lines.Enqueue((category, formatter(state, exception)));
                }
            }
        }
    }
}
