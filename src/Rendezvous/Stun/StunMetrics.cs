using System.Diagnostics.Metrics;
using System.Globalization;

namespace Relay.Rendezvous.Stun;

/// <summary>Where a STUN message arrived.</summary>
public enum StunTransport : byte
{
    /// <summary>UDP.</summary>
    Udp,
    /// <summary>TCP.</summary>
    Tcp,
    /// <summary>TLS over TCP.</summary>
    Tls,
}

/// <summary>Why a packet got no answer, or a connection was closed.</summary>
public enum StunDropReason : byte
{
    /// <summary>Not a STUN message (RFC 8489 §5 header checks, or bad FINGERPRINT).</summary>
    NotStun,
    /// <summary>Source IP over its request budget.</summary>
    RateLimited,
    /// <summary>A STUN response or an unsolicited indication: nothing to answer.</summary>
    NotRequest,
    /// <summary>The socket refused the response.</summary>
    SendFailed,
    /// <summary>Over the configured message size.</summary>
    TooLarge,
    /// <summary>A TCP/TLS connection over the per-IP limit.</summary>
    ConnectionLimit,
    /// <summary>A TCP/TLS connection idle past its timeout.</summary>
    IdleTimeout,
    /// <summary>A TCP/TLS connection refused because the server holds <c>Relay:Stun:Tcp:MaxConnections</c>.</summary>
    ConnectionCap,
    /// <summary>A TCP/TLS connection closed because a message was not complete within <c>Relay:Stun:Tcp:MessageTimeoutSeconds</c>.</summary>
    MessageTimeout,
}

/// <summary>
/// Meter <c>Relay.Stun</c>. The hot path only increments a slot in a fixed array; the meter's observable
/// instruments read those slots when <c>/metrics</c> is scraped or a collector asks. So counting costs no
/// allocation and no tag boxing per packet, whoever is listening.
/// </summary>
public sealed class StunMetrics
{
    /// <summary>Meter name, for dotnet-counters and OpenTelemetry.</summary>
    public const string MeterName = "Relay.Stun";

    private static readonly string[] TransportNames = ["udp", "tcp", "tls"];
    private static readonly string[] KindNames = ["rfc5389", "rfc3489"];
    private static readonly string[] DropReasonNames = ["not_stun", "rate_limited", "not_request", "send_failed", "too_large", "connection_limit", "idle_timeout", "connection_cap", "message_timeout"];
    private static readonly int[] Codes = [200, 400, 420, 0];

    private readonly long[] _requests = new long[TransportNames.Length * KindNames.Length];
    private readonly long[] _responses = new long[TransportNames.Length * Codes.Length];
    private readonly long[] _drops = new long[TransportNames.Length * DropReasonNames.Length];
    private readonly long[] _connections = new long[TransportNames.Length];

    /// <summary>Creates the instruments on a meter from the host's factory.</summary>
    public StunMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableCounter("relay.stun.requests", () => Observe(_requests, KindNames, "kind"), "{request}", "STUN requests received, by transport and kind.");
        meter.CreateObservableCounter("relay.stun.responses", ObserveResponses, "{response}", "STUN responses sent, by transport and code; code 200 is success.");
        meter.CreateObservableCounter("relay.stun.drops", () => Observe(_drops, DropReasonNames, "reason"), "{packet}", "Packets dropped or connections closed without an answer, by transport and reason.");
        meter.CreateObservableUpDownCounter("relay.stun.connections", ObserveConnections, "{connection}", "Open STUN TCP/TLS connections.");
    }

    /// <summary>Counts a request.</summary>
    public void Request(StunTransport transport, bool classic) =>
        Interlocked.Increment(ref _requests[((int)transport * KindNames.Length) + (classic ? 1 : 0)]);

    /// <summary>Counts a response.</summary>
    public void Response(StunTransport transport, int code)
    {
        var index = Array.IndexOf(Codes, code, 0, Codes.Length - 1);
        Interlocked.Increment(ref _responses[((int)transport * Codes.Length) + (index < 0 ? Codes.Length - 1 : index)]);
    }

    /// <summary>Counts a drop.</summary>
    public void Drop(StunTransport transport, StunDropReason reason) =>
        Interlocked.Increment(ref _drops[((int)transport * DropReasonNames.Length) + (int)reason]);

    /// <summary>A TCP/TLS connection opened (+1) or closed (-1).</summary>
    public void Connection(StunTransport transport, int delta) => Interlocked.Add(ref _connections[(int)transport], delta);

    /// <summary>Current value of a drop counter; for tests and health output.</summary>
    public long Drops(StunTransport transport, StunDropReason reason) =>
        Volatile.Read(ref _drops[((int)transport * DropReasonNames.Length) + (int)reason]);

    /// <summary>Current value of a response counter.</summary>
    public long Responses(StunTransport transport, int code)
    {
        var index = Array.IndexOf(Codes, code, 0, Codes.Length - 1);
        return Volatile.Read(ref _responses[((int)transport * Codes.Length) + (index < 0 ? Codes.Length - 1 : index)]);
    }

    private static IEnumerable<Measurement<long>> Observe(long[] slots, string[] names, string tag)
    {
        for (var t = 0; t < TransportNames.Length; t++)
        {
            for (var i = 0; i < names.Length; i++)
            {
                yield return new Measurement<long>(Volatile.Read(ref slots[(t * names.Length) + i]), new("transport", TransportNames[t]), new(tag, names[i]));
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveResponses()
    {
        for (var t = 0; t < TransportNames.Length; t++)
        {
            for (var i = 0; i < Codes.Length; i++)
            {
                var code = Codes[i] == 0 ? "other" : Codes[i].ToString(CultureInfo.InvariantCulture);
                yield return new Measurement<long>(Volatile.Read(ref _responses[(t * Codes.Length) + i]), new("transport", TransportNames[t]), new("code", code));
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveConnections()
    {
        for (var t = 0; t < TransportNames.Length; t++)
        {
            yield return new Measurement<long>(Volatile.Read(ref _connections[t]), new KeyValuePair<string, object?>("transport", TransportNames[t]));
        }
    }
}
