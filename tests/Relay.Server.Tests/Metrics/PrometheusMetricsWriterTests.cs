using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Server.Telemetry;

namespace Relay.Server.Tests.Metrics;

/// <summary>The one <c>/metrics</c> exporter, on meters from a real meter factory: no server, no sockets.</summary>
public sealed class PrometheusMetricsWriterTests : IDisposable
{
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    private IMeterFactory Factory => _services.GetRequiredService<IMeterFactory>();

    public void Dispose() => _services.Dispose();

    [Fact]
    public void MqttAndIdentityFamilies_AreRenderedFromTheirMeters_AuthOnce()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        var mqtt = new MqttMetrics(Factory);
        var identity = new MqttIdentityMetrics(Factory);
        mqtt.Auth(MqttAuthOutcome.RateLimited);
        identity.AclDenied(MqttAction.Subscribe);

        var output = writer.Write();
        Assert.Contains("# TYPE relay_mqtt_auth_total counter\n", output, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_auth_total{outcome=\"rate_limited\"} 1\n", output, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_acl_denials_total{action=\"subscribe\"} 1\n", output, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_auth_hook_errors_total 0\n", output, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_connections_total{transport=\"websocket\"} 0\n", output, StringComparison.Ordinal);
        Assert.Contains("relay_mqtt_bytes_total{direction=\"in\"} 0\n", output, StringComparison.Ordinal);
        Assert.Single(PrometheusExposition.Parse(output), static f => f.Name == "relay_mqtt_auth_total");
    }

    [Theory]
    [InlineData("relay.stun.requests", "{request}", "counter", "relay_stun_requests_total")]
    [InlineData("relay.stun.connections", "{connection}", "gauge", "relay_stun_connections")]
    [InlineData("relay.turn.relayed.bytes", "By", "counter", "relay_turn_relayed_bytes_total")]
    [InlineData("relay.mqtt.bytes", "By", "counter", "relay_mqtt_bytes_total")]
    [InlineData("relay.mqtt.connections.total", "{connection}", "counter", "relay_mqtt_connections_total")]
    [InlineData("relay.queue.size", "By", "gauge", "relay_queue_size_bytes")]
    [InlineData("relay.rendezvous.time_to_direct", "s", "histogram", "relay_rendezvous_time_to_direct_seconds")]
    [InlineData("relay.x.delay", "ms", "histogram", "relay_x_delay_milliseconds")]
    [InlineData("relay.x-y z", null, "gauge", "relay_x_y_z")]
    public void Names_FollowTheOpenTelemetryRules_WithoutDoubledSuffixes(string instrument, string? unit, string type, string expected) =>
        Assert.Equal(expected, PrometheusFamily.PrometheusName(instrument, unit, type));

    [Fact]
    public void Histogram_HasCumulativeBucketsOnItsAdviceBounds_AndZerosBeforeTheFirstRecord()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        var histogram = Factory.Create("Relay.Test").CreateHistogram("relay.test.wait", "s", "Waits.", tags: null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 1] });

        Assert.Equal(
            "# HELP relay_test_wait_seconds Waits.\n# TYPE relay_test_wait_seconds histogram\n"
            + "relay_test_wait_seconds_bucket{le=\"0.1\"} 0\nrelay_test_wait_seconds_bucket{le=\"1\"} 0\nrelay_test_wait_seconds_bucket{le=\"+Inf\"} 0\n"
            + "relay_test_wait_seconds_sum 0\nrelay_test_wait_seconds_count 0\n",
            writer.Write());

        // A value on a bound counts in that bound's bucket ("less than or equal").
        histogram.Record(0.1);
        histogram.Record(0.5);
        histogram.Record(5);
        var family = Assert.Single(PrometheusExposition.Parse(writer.Write()));
        Assert.Equal([1, 2, 3], family.Samples.Where(static s => s.Name.EndsWith("_bucket", StringComparison.Ordinal)).Select(static s => s.Value));
        Assert.Equal(5.6, family.Samples.Single(static s => s.Name.EndsWith("_sum", StringComparison.Ordinal)).Value, 9);
        Assert.Equal(3, family.Samples.Single(static s => s.Name.EndsWith("_count", StringComparison.Ordinal)).Value);
    }

    [Fact]
    public void LabelledHistogram_HasOneSeriesPerLabelSet()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        var histogram = Factory.Create("Relay.Test").CreateHistogram<double>("relay.test.size", "By", "Sizes.", tags: null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [10] });
        histogram.Record(5, new KeyValuePair<string, object?>("kind", "a"));
        histogram.Record(50, new KeyValuePair<string, object?>("kind", "b"));

        var family = Assert.Single(PrometheusExposition.Parse(writer.Write()));
        Assert.Equal("relay_test_size_bytes", family.Name);
        Assert.Equal("kind", family.LabelKeys);
        Assert.Equal(1, family.Samples.Single(static s => s.Label("kind") == "a" && s.Label("le") == "10").Value);
        Assert.Equal(0, family.Samples.Single(static s => s.Label("kind") == "b" && s.Label("le") == "10").Value);
        Assert.Equal(50, family.Samples.Single(static s => s.Label("kind") == "b" && s.Name == "relay_test_size_bytes_sum").Value);
    }

    [Fact]
    public void LabelValuesAndHelp_AreEscaped_AndReadBackUnchanged()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        const string value = "a\"b\\c\nd";
        Factory.Create("Relay.Test").CreateObservableGauge("relay.test.odd", () => new Measurement<long>(7, new KeyValuePair<string, object?>("name", value)), null, "One\\two\nthree.");

        var output = writer.Write();
        Assert.StartsWith("# HELP relay_test_odd One\\\\two\\nthree.\n", output, StringComparison.Ordinal);
        Assert.Contains("relay_test_odd{name=\"a\\\"b\\\\c\\nd\"} 7\n", output, StringComparison.Ordinal);
        Assert.Equal(value, Assert.Single(Assert.Single(PrometheusExposition.Parse(output)).Samples).Label("name"));
    }

    [Fact]
    public void OnlyThisFactorysRelayMeters_AreRendered_InMeterOrder()
    {
        using var other = new ServiceCollection().AddMetrics().BuildServiceProvider();
        using var writer = new PrometheusMetricsWriter(Factory);
        Factory.Create("Relay.B").CreateObservableCounter("relay.b.one", static () => 1L);
        Factory.Create("Relay.A").CreateObservableCounter("relay.a.one", static () => 1L);
        Factory.Create("Relay.A").CreateObservableCounter("relay.a.two", static () => 2L);
        Factory.Create("Microsoft.AspNetCore.Hosting").CreateObservableCounter("relay.framework", static () => 1L);
        other.GetRequiredService<IMeterFactory>().Create("Relay.A").CreateObservableCounter("relay.a.elsewhere", static () => 1L);

        Assert.Equal(["relay_a_one_total", "relay_a_two_total", "relay_b_one_total"], PrometheusExposition.Parse(writer.Write()).Select(static f => f.Name));
    }

    [Fact]
    public void InstrumentsCreatedBeforeTheWriter_AreRenderedToo()
    {
        var counter = 0L;
        Factory.Create("Relay.Test").CreateObservableCounter("relay.test.early", () => Volatile.Read(ref counter));
        using var writer = new PrometheusMetricsWriter(Factory);
        Interlocked.Add(ref counter, 3);

        Assert.Equal(3, Assert.Single(Assert.Single(PrometheusExposition.Parse(writer.Write())).Samples).Value);
    }

    [Fact]
    public void TwoInstrumentsWithOnePrometheusName_AreRefused()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        var meter = Factory.Create("Relay.Test");
        meter.CreateObservableCounter("relay.test.hits", static () => 1L);

        var error = Assert.Throws<InvalidOperationException>(() => meter.CreateObservableCounter("relay.test.hits_total", static () => 1L));
        Assert.Contains("relay_test_hits_total", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void PushStyleCounters_AreRefused_SoTheFeatureStaysTheOwnerOfItsCounts()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        var error = Assert.Throws<NotSupportedException>(() => Factory.Create("Relay.Test").CreateCounter<long>("relay.test.pushed"));
        Assert.Contains("relay.test.pushed", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ADisposedMeter_LeavesTheScrape()
    {
        using var writer = new PrometheusMetricsWriter(Factory);
        Factory.Create("Relay.Test").CreateObservableCounter("relay.test.gone", static () => 1L);
        Assert.NotEmpty(writer.Write());

        _services.Dispose();
        Assert.Equal(string.Empty, writer.Write());
    }
}
