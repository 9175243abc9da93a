using System.Net;
using Relay.Server.Primitives;

namespace Relay.Server.Mqtt;

/// <summary>
/// The log lines a stranger or a hostile client can cause on the MQTT listeners (review M6): protocol
/// errors, oversized and pre-CONNECT packets, CONNECT and keep-alive timeouts, unread output. Each kind is
/// throttled across all connections (one line per 10 s, carrying how many were held back; the metrics count
/// every event), and every field from the wire (client id, topic) is capped and escaped with <see cref="LogText"/>,
/// so no client can flood the log or forge a line in it.
/// </summary>
internal sealed partial class MqttClientLog
{
    private const int Kinds = 6;
    private const int ProtocolErrorSlot = 0;
    private const int ConnectTimeoutSlot = 1;
    private const int KeepAliveSlot = 2;
    private const int PendingOutputSlot = 3;
    private const int PreConnectSlot = 4;
    private const int ResponseTopicSlot = 5;

    private readonly ILogger _logger;
    private readonly LogThrottle _throttle;

    public MqttClientLog(ILogger<MqttConnection> logger, TimeProvider time)
    {
        _logger = logger;
        _throttle = new LogThrottle(Kinds, TimeSpan.FromSeconds(10), time);
    }

    public void ProtocolError(string? clientId, IPEndPoint? remote, string where, string description)
    {
        if (_logger.IsEnabled(LogLevel.Information) && _throttle.TryEnter(ProtocolErrorSlot, out var suppressed))
        {
            LogProtocolError(LogText.Safe(clientId), remote, where, description, suppressed);
        }
    }

    public void ConnectTimeout(IPEndPoint? remote, int seconds)
    {
        if (_logger.IsEnabled(LogLevel.Information) && _throttle.TryEnter(ConnectTimeoutSlot, out var suppressed))
        {
            LogConnectTimeout(remote, seconds, suppressed);
        }
    }

    public void KeepAlive(string? clientId, int seconds)
    {
        if (_logger.IsEnabled(LogLevel.Information) && _throttle.TryEnter(KeepAliveSlot, out var suppressed))
        {
            LogKeepAlive(LogText.Safe(clientId), seconds, suppressed);
        }
    }

    public void PendingOutput(string? clientId, IPEndPoint? remote, long pending, int limit)
    {
        if (_logger.IsEnabled(LogLevel.Warning) && _throttle.TryEnter(PendingOutputSlot, out var suppressed))
        {
            LogPendingOutput(LogText.Safe(clientId), remote, pending, limit, suppressed);
        }
    }

    public void PreConnectTooLarge(IPEndPoint? remote, int limit)
    {
        if (_logger.IsEnabled(LogLevel.Information) && _throttle.TryEnter(PreConnectSlot, out var suppressed))
        {
            LogPreConnectTooLarge(remote, limit, suppressed);
        }
    }

    public void ResponseTopicDenied(string? clientId, string responseTopic)
    {
        if (_logger.IsEnabled(LogLevel.Information) && _throttle.TryEnter(ResponseTopicSlot, out var suppressed))
        {
            LogResponseTopicDenied(LogText.Safe(clientId), LogText.Safe(responseTopic), suppressed);
        }
    }

    [LoggerMessage(EventId = 5101, Level = LogLevel.Information, Message = "MQTT connection {ClientId} from {Remote}: protocol error in {Where}: {Description} ({Suppressed} more since the last such line)")]
    private partial void LogProtocolError(string clientId, IPEndPoint? remote, string where, string description, long suppressed);

    [LoggerMessage(EventId = 5103, Level = LogLevel.Information, Message = "MQTT connection from {Remote}: no CONNECT within {Seconds} s (Relay:Mqtt:ConnectTimeoutSeconds) ({Suppressed} more since the last such line)")]
    private partial void LogConnectTimeout(IPEndPoint? remote, int seconds, long suppressed);

    [LoggerMessage(EventId = 5104, Level = LogLevel.Information, Message = "MQTT client {ClientId}: nothing received for 1.5 x keep-alive {Seconds} s; closing [MQTT-3.1.2-24] ({Suppressed} more since the last such line)")]
    private partial void LogKeepAlive(string clientId, int seconds, long suppressed);

    [LoggerMessage(EventId = 5106, Level = LogLevel.Warning, Message = "MQTT client {ClientId} from {Remote}: {Pending} B of output unread, over Relay:Mqtt:MaxPendingOutputBytes ({Limit}); closing ({Suppressed} more since the last such line)")]
    private partial void LogPendingOutput(string clientId, IPEndPoint? remote, long pending, int limit, long suppressed);

    [LoggerMessage(EventId = 5107, Level = LogLevel.Information, Message = "MQTT connection from {Remote}: a packet before CONNECT declared more than Relay:Mqtt:MaxPreConnectPacketBytes ({Limit}); closed unread ({Suppressed} more since the last such line)")]
    private partial void LogPreConnectTooLarge(IPEndPoint? remote, int limit, long suppressed);

    [LoggerMessage(EventId = 5123, Level = LogLevel.Information, Message = "MQTT client {ClientId}: PUBLISH refused, it may not subscribe to its Response Topic {ResponseTopic} ({Suppressed} more since the last such line)")]
    private partial void LogResponseTopicDenied(string clientId, string responseTopic, long suppressed);
}
