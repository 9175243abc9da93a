using System.Collections.Concurrent;
using System.Net;

namespace Relay.Server.Mqtt;

/// <summary>Relay:Mqtt:MaxConnectionsPerIp: open MQTT connections counted per client address, whatever the transport.</summary>
internal sealed partial class MqttConnectionsPerIp
{
    private readonly ConcurrentDictionary<IPAddress, int> _counts = new();
    private readonly int _limit;
    private readonly MqttMetrics _metrics;
    private readonly ILogger _logger;

    public MqttConnectionsPerIp(MqttOptions options, MqttMetrics metrics, ILogger<MqttConnectionsPerIp> logger)
    {
        _limit = options.MaxConnectionsPerIp;
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>Counts a connection from <paramref name="ip"/>; false (counted as a limit hit) when the limit is reached.</summary>
    public bool TryEnter(IPAddress ip)
    {
        while (true)
        {
            var current = _counts.GetOrAdd(ip, 0);
            if (current >= _limit)
            {
                _metrics.LimitHit(MqttLimit.ConnectionsPerIp);
                LogConnectionLimit(ip, _limit);
                return false;
            }

            if (_counts.TryUpdate(ip, current + 1, current))
            {
                return true;
            }
        }
    }

    /// <summary>A connection counted by <see cref="TryEnter"/> ended; an address with none left is forgotten.</summary>
    public void Leave(IPAddress ip)
    {
        while (_counts.TryGetValue(ip, out var current))
        {
            if (current <= 1 ? _counts.TryRemove(new KeyValuePair<IPAddress, int>(ip, current)) : _counts.TryUpdate(ip, current - 1, current))
            {
                return;
            }
        }
    }

    [LoggerMessage(EventId = 5010, Level = LogLevel.Information, Message = "MQTT: refused a connection from {Address}: {Limit} already open from it (Relay:Mqtt:MaxConnectionsPerIp)")]
    private partial void LogConnectionLimit(IPAddress address, int limit);
}
