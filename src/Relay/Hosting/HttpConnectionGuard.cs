using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Options;
using Relay.Server.Primitives;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Hosting;

/// <summary>
/// The connection limits of the operator HTTP and HTTPS listeners (<c>Relay:Http</c>) and their meter,
/// <c>Relay.Http</c>. A connection past <see cref="HttpOptions.MaxConnections"/> or
/// <see cref="HttpOptions.MaxConnectionsPerIp"/> is aborted before TLS and before HTTP, so a flood costs an
/// accepted socket. Kestrel enforces the rest (request-header timeout, header and body sizes); the reasons it
/// closes connections on these ports with (its <c>kestrel.connection.duration</c> <c>error.type</c>) are counted
/// here too, so a slowloris shows up in <c>relay_http_connection_errors_total</c> and a throttled log line.
/// </summary>
internal sealed partial class HttpConnectionGuard : IDisposable
{
    public const string MeterName = "Relay.Http";

    private const string KestrelMeter = "Microsoft.AspNetCore.Server.Kestrel";
    private const string KestrelConnectionDuration = "kestrel.connection.duration";

    // Kestrel's reasons are a fixed enum; past this many distinct names the rest count as "other".
    private const int MaxReasons = 64;

    private readonly int _maxConnections;
    private readonly PerIpConnectionLimiter _perIp;
    private readonly ILogger _logger;
    private readonly IMeterFactory _meterFactory;
    private readonly LogThrottle _logThrottle;
    private readonly HashSet<int> _ports;
    private readonly ConcurrentDictionary<string, StrongBox<long>> _closedByReason = new(StringComparer.Ordinal);
    private readonly MeterListener _kestrel = new();
    private int _open;
    private long _refusedByCap;

    public HttpConnectionGuard(IOptions<HttpOptions> options, IMeterFactory meterFactory, TimeProvider time, ILogger<HttpConnectionGuard> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(meterFactory);
        ArgumentNullException.ThrowIfNull(logger);
        var http = options.Value;
        _maxConnections = http.MaxConnections;
        _logger = logger;
        _meterFactory = meterFactory;
        _logThrottle = new LogThrottle(2, TimeSpan.FromSeconds(10), time);
        _perIp = new PerIpConnectionLimiter(http.MaxConnectionsPerIp, time, (address, limit) => LogPerIpCap(logger, address, limit));
        _ports = [http.Port, http.TlsPort];

        // The slow-client reasons show from the start, at zero, for dashboards and alerts.
        foreach (var reason in (string[])["request_headers_timeout", "min_request_body_data_rate", "min_response_data_rate"])
        {
            _closedByReason[reason] = new StrongBox<long>();
        }

        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableGauge(
            "relay.http.connections",
            () => Volatile.Read(ref _open),
            "{connection}",
            "Connections open on the HTTP and HTTPS ports (API, console, MQTT over WebSocket).");
        meter.CreateObservableCounter(
            "relay.http.connections.refused",
            () => Labelled("reason", ("connection_cap", Interlocked.Read(ref _refusedByCap)), ("ip_cap", _perIp.Refused)),
            "{connection}",
            "Connections closed on arrival: connection_cap (Relay:Http:MaxConnections) or ip_cap (Relay:Http:MaxConnectionsPerIp).");
        meter.CreateObservableCounter(
            "relay.http.connection_errors",
            () => _closedByReason.Select(static r =>
                new Measurement<long>(Interlocked.Read(ref r.Value.Value), new KeyValuePair<string, object?>("reason", r.Key))),
            "{connection}",
            "Connections on the HTTP and HTTPS ports that ended on an error, by Kestrel's reason: "
                + "request_headers_timeout (a slowloris), min_request_body_data_rate, invalid_request_line, tls_handshake_failed, ...");

        // Only this host's Kestrel (its meters come from our factory): a test process runs many hosts.
        _kestrel.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == KestrelMeter && instrument.Name == KestrelConnectionDuration
                && ReferenceEquals(instrument.Meter.Scope, _meterFactory))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _kestrel.SetMeasurementEventCallback<double>(OnConnectionEnded);
        _kestrel.Start();
    }

    /// <summary>Connections open through this guard now.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>Connection middleware for an HTTP listener; goes before TLS so a refused connection costs no handshake.</summary>
    public ConnectionDelegate Limit(ConnectionDelegate next) => async connection =>
    {
        var address = (connection.RemoteEndPoint as IPEndPoint)?.Address;
        if (Interlocked.Increment(ref _open) > _maxConnections)
        {
            Interlocked.Decrement(ref _open);
            Interlocked.Increment(ref _refusedByCap);
            if (_logThrottle.TryEnter(0, out var suppressed))
            {
                LogConnectionCap(_logger, _maxConnections, suppressed);
            }

            connection.Abort(new ConnectionAbortedException("Connection cap (Relay:Http:MaxConnections)"));
            return;
        }

        if (address is not null && !_perIp.TryEnter(address))
        {
            Interlocked.Decrement(ref _open);
            connection.Abort(new ConnectionAbortedException("Per-address connection cap (Relay:Http:MaxConnectionsPerIp)"));
            return;
        }

        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            if (address is not null)
            {
                _perIp.Leave(address);
            }

            Interlocked.Decrement(ref _open);
        }
    };

    /// <summary>Connections Kestrel ended on <paramref name="reason"/> on the HTTP ports so far (tests read it).</summary>
    public long ErrorCount(string reason) =>
        _closedByReason.TryGetValue(reason, out var count) ? Interlocked.Read(ref count.Value) : 0;

    public void Dispose() => _kestrel.Dispose();

    private void OnConnectionEnded(
        Instrument instrument, double seconds, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
    {
        string? reason = null;
        var onHttpPort = false;
        foreach (var tag in tags)
        {
            switch (tag.Key)
            {
                case "error.type":
                    reason = tag.Value as string;
                    break;
                case "server.port":
                    onHttpPort = tag.Value is int port && _ports.Contains(port);
                    break;
            }
        }

        if (reason is null || !onHttpPort)
        {
            return;
        }

        if (!_closedByReason.TryGetValue(reason, out var count))
        {
            var key = _closedByReason.Count < MaxReasons ? reason : "other";
            count = _closedByReason.GetOrAdd(key, static _ => new StrongBox<long>());
        }

        Interlocked.Increment(ref count.Value);
        if (_logThrottle.TryEnter(1, out var suppressed))
        {
            LogConnectionError(_logger, LogText.Safe(reason), suppressed);
        }
    }

    [LoggerMessage(
        EventId = 1101,
        Level = LogLevel.Warning,
        Message = "HTTP: connection refused, {Limit} connections open (Relay:Http:MaxConnections); {Suppressed} more refused since the last line, "
            + "all counted in relay_http_connections_refused_total")]
    private static partial void LogConnectionCap(ILogger logger, int limit, long suppressed);

    [LoggerMessage(
        EventId = 1102,
        Level = LogLevel.Warning,
        Message = "HTTP: connection from {Address} refused, it has {Limit} open (Relay:Http:MaxConnectionsPerIp); "
            + "further refusals are counted in relay_http_connections_refused_total and logged at most every 10 s")]
    private static partial void LogPerIpCap(ILogger logger, IPAddress address, int limit);

    [LoggerMessage(
        EventId = 1103,
        Level = LogLevel.Information,
        Message = "HTTP: a connection ended on {Reason}; {Suppressed} more ended on an error since the last line, "
            + "all counted in relay_http_connection_errors_total")]
    private static partial void LogConnectionError(ILogger logger, string reason, long suppressed);
}
