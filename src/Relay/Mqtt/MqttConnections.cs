using System.Collections.Concurrent;
using System.Net;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>
/// The live MQTT connections: admitted against the per-IP limit and counted per transport, checked by the
/// housekeeping sweep for their deadlines, and ended at shutdown.
/// </summary>
internal sealed class MqttConnections
{
    private readonly ConcurrentDictionary<MqttConnection, byte> _live = new();
    private readonly MqttMetrics _metrics;

    public MqttConnections(MqttConnectionsPerIp perIp, MqttMetrics metrics)
    {
        PerIp = perIp;
        _metrics = metrics;
    }

    public MqttConnectionsPerIp PerIp { get; }

    /// <summary>Admits a connection from <paramref name="ip"/> over <paramref name="kind"/>; false when Relay:Mqtt:MaxConnectionsPerIp refuses it.</summary>
    public bool TryAdmit(MqttTransport kind, IPAddress? ip)
    {
        if (ip is not null && !PerIp.TryEnter(ip))
        {
            return false;
        }

        _metrics.Connection(kind, +1);
        return true;
    }

    /// <summary>The end of a connection <see cref="TryAdmit"/> admitted.</summary>
    public void Release(MqttTransport kind, IPAddress? ip)
    {
        _metrics.Connection(kind, -1);
        if (ip is not null)
        {
            PerIp.Leave(ip);
        }
    }

    public void Add(MqttConnection connection) => _live.TryAdd(connection, 0);

    public void Remove(MqttConnection connection) => _live.TryRemove(connection, out _);

    /// <summary>The CONNECT deadline and 1.5x keep-alive of every live connection, at <paramref name="now"/> (<see cref="Environment.TickCount64"/>).</summary>
    public void CheckDeadlines(long now)
    {
        foreach (var (connection, _) in _live)
        {
            connection.CheckDeadlines(now);
        }
    }

    /// <summary>Shutdown: every connection ends, v5 clients with DISCONNECT 0x8B (Server shutting down).</summary>
    public void EndAll()
    {
        foreach (var (connection, _) in _live)
        {
            _ = connection.RequestEnd(MqttEndReason.Shutdown, MqttReasonCode.ServerShuttingDown);
        }
    }

    /// <summary>A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; logs, limits and presence want a.b.c.d.</summary>
    public static IPEndPoint? Unmapped(IPEndPoint? endPoint) =>
        endPoint?.Address is { IsIPv4MappedToIPv6: true } mapped ? new IPEndPoint(mapped.MapToIPv4(), endPoint.Port) : endPoint;
}
