using System.Diagnostics.Metrics;
using System.Security.Cryptography.X509Certificates;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Hosting;

/// <summary>Meter <c>Relay.Tls</c>: the certificate every TLS listener serves.</summary>
internal sealed class TlsMetrics
{
    public const string MeterName = "Relay.Tls";

    private long _reloaded;
    private long _failed;
    private long _notAfterSeconds;

    public TlsMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter(
            "relay.tls.certificate.reloads",
            () => Labelled("result", ("ok", Interlocked.Read(ref _reloaded)), ("failed", Interlocked.Read(ref _failed))),
            "{reload}",
            "Certificate files read again after a change: ok (now served) or failed (refused; the previous certificate stays in service).");
        meter.CreateObservableGauge(
            "relay.tls.certificate.not_after",
            () => Interlocked.Read(ref _notAfterSeconds),
            "s",
            "When the certificate being served expires, in Unix seconds (0 without TLS): alert well before it.");
    }

    /// <summary>Reloads refused (a bad pair on disk); tests read it.</summary>
    public long FailedReloads => Interlocked.Read(ref _failed);

    public void CountReload(bool succeeded)
    {
        if (succeeded)
        {
            Interlocked.Increment(ref _reloaded);
        }
        else
        {
            Interlocked.Increment(ref _failed);
        }
    }

    public void Serve(X509Certificate2 leaf) => Interlocked.Exchange(ref _notAfterSeconds, new DateTimeOffset(leaf.NotAfter.ToUniversalTime()).ToUnixTimeSeconds());
}
