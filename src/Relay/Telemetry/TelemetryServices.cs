using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using Relay.Server.Hosting;

namespace Relay.Server.Telemetry;

/// <summary>
/// Where the server's meters are read: <c>/metrics</c> (always, by <see cref="PrometheusMetricsWriter"/>) and,
/// when <c>Relay:Telemetry:Otlp:Endpoint</c> is set, an OpenTelemetry OTLP exporter. Both read the same
/// instruments; each metric is declared once, by its feature.
/// </summary>
internal static class TelemetryServices
{
    // Names the OTLP exporter's options, so these settings apply to this exporter and no other.
    private const string OtlpExporterName = "relay";

    /// <summary>Registers <c>Relay:Telemetry</c>, the meter factory, the <c>/metrics</c> writer and, if configured, OTLP export.</summary>
    public static IServiceCollection AddRelayTelemetry(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddRelayHosting(configuration);
        services.AddMetrics();
        services.AddRelayOptions<TelemetryOptions>(configuration, TelemetryOptions.SectionName);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TelemetryOptions>, TelemetryOptionsValidator>());
        services.TryAddSingleton<PrometheusMetricsWriter>();

        // Decided from the raw key: with no endpoint the OpenTelemetry SDK is not even started. A malformed one
        // is reported by the validator before the host starts.
        if (!string.IsNullOrWhiteSpace(configuration[$"{TelemetryOptions.SectionName}:Otlp:Endpoint"]))
        {
            services.AddOpenTelemetry()
                .ConfigureResource(static resource => resource.AddService("relay"))
                .WithMetrics(static metrics => metrics
                    .AddMeter(PrometheusMetricsWriter.MeterPrefix + "*")
                    .AddOtlpExporter(OtlpExporterName, configureExporterAndMetricReader: null));
            services.AddOptions<OtlpExporterOptions>(OtlpExporterName).Configure<IOptions<TelemetryOptions>>(static (exporter, telemetry) =>
            {
                var otlp = telemetry.Value.Otlp;
                exporter.Endpoint = new Uri(otlp.Endpoint!);
                exporter.Protocol = otlp.Protocol == OtlpProtocol.Grpc ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
            });
            services.AddOptions<MetricReaderOptions>(OtlpExporterName).Configure<IOptions<TelemetryOptions>>(static (reader, telemetry) =>
                reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = telemetry.Value.Otlp.ExportIntervalSeconds * 1000);
        }

        return services;
    }

    /// <summary>
    /// <c>/metrics</c> in the Prometheus text format. The writer and every feature's metrics are created here,
    /// before the host starts, so the writer listens from the first measurement on.
    /// </summary>
    public static WebApplication MapRelayMetrics(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var writer = app.Services.GetRequiredService<PrometheusMetricsWriter>();
        foreach (var metrics in app.Services.GetServices<FeatureMetrics>())
        {
            _ = metrics.Create(app.Services);
        }

        app.MapGet("/metrics", () => Results.Text(writer.Write(), PrometheusMetricsWriter.ContentType));
        return app;
    }
}
