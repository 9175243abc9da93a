using System.Net;
using System.Text;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Metrics;
using Relay.Server.Hosting;

namespace Relay.Server.Tests.Metrics;

/// <summary><c>Relay:Telemetry:Otlp</c>: off by default, validated, and when on the same meters reach a collector.</summary>
public sealed class OtlpExportTests
{
    [Fact]
    public async Task WithoutAnEndpoint_TheOpenTelemetrySdkIsNotStarted()
    {
        await using var server = await RelayTestServer.StartAsync();
        Assert.Null(server.Services.GetService<MeterProvider>());
    }

    [Theory]
    [InlineData("Relay:Telemetry:Otlp:Endpoint=collector:4317", "Relay:Telemetry:Otlp:Endpoint: must be an absolute http:// or https:// URL")]
    [InlineData("Relay:Telemetry:Otlp:Endpoint=ftp://collector", "Relay:Telemetry:Otlp:Endpoint: must be an absolute http:// or https:// URL")]
    [InlineData("Relay:Telemetry:Otlp:ExportIntervalSeconds=0", "Relay:Telemetry:Otlp:ExportIntervalSeconds: must be between 1 and 86400")]
    [InlineData("Relay:Telemetry:Otlp:Protocol=Thrift", "Relay:Telemetry:Otlp:Protocol: must be Grpc or HttpProtobuf")]
    [InlineData("Relay:Telemetry:Otlp:Endpont=http://collector:4317", "Relay:Telemetry: unknown key(s) 'Endpont'")]
    public void BadSettings_StopStartup_NamingTheKey(string setting, string expected)
    {
        var error = Assert.Throws<RelayConfigurationException>(() => RelayHost.Build(["--" + setting]));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WithAnEndpoint_TheServersMeters_ArePushedOverOtlpHttp()
    {
        await using var collector = await OtlpCollector.StartAsync();
        await using var server = await RelayTestServer.StartAsync(
            $"Relay:Telemetry:Otlp:Endpoint={collector.Url}",
            "Relay:Telemetry:Otlp:Protocol=HttpProtobuf",
            "Relay:Telemetry:Otlp:ExportIntervalSeconds=1");
        Assert.NotNull(server.Services.GetService<MeterProvider>());

        // The protobuf body carries instrument and meter names as plain UTF-8 strings.
        var body = await collector.NextAsync();
        var text = Encoding.UTF8.GetString(body);
        Assert.Contains("relay.stun.requests", text, StringComparison.Ordinal);
        Assert.Contains("relay.mqtt.connections", text, StringComparison.Ordinal);
        Assert.Contains("Relay.Turn", text, StringComparison.Ordinal);
    }

    /// <summary>A loopback HTTP endpoint that takes OTLP/HTTP metric exports and hands over their bodies.</summary>
    private sealed class OtlpCollector : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly Channel<byte[]> _bodies = Channel.CreateUnbounded<byte[]>();

        private OtlpCollector(WebApplication app, string url)
        {
            _app = app;
            Url = url;
        }

        public string Url { get; }

        public static async Task<OtlpCollector> StartAsync()
        {
            var port = FreePorts.Tcp();
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
            var app = builder.Build();
            var collector = new OtlpCollector(app, $"http://127.0.0.1:{port}/v1/metrics");
            app.MapPost("/v1/metrics", async (HttpContext http) =>
            {
                using var body = new MemoryStream();
                await http.Request.Body.CopyToAsync(body);
                collector._bodies.Writer.TryWrite(body.ToArray());
                return Results.Ok();
            });
            await app.StartAsync();
            return collector;
        }

        /// <summary>The next export's body; fails after 30 s.</summary>
        public async Task<byte[]> NextAsync()
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            return await _bodies.Reader.ReadAsync(timeout.Token);
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
