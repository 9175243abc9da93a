using System.Collections.Concurrent;
using System.Net;
using Relay.Protocol.Mqtt;
using Relay.Server.Devices;

namespace Relay.Server.Mqtt;

/// <summary>
/// The MQTT plane as the features above it see devices: presence (online now, or when last seen), ending a
/// device's connection, and the channel that sends one device a message over its own session. Answers from
/// the session registry; owns only the last-seen times of clients that went offline.
/// </summary>
internal sealed class MqttDevices : IDevicePresence, IDeviceConnections, IMqttDeviceChannel
{
    // Last disconnect per client id, so presence can answer "last seen" for sessions that ended with
    // their connection. Bounded: past the cap the oldest half is forgotten (their LastSeen becomes unknown).
    private const int MaxLastSeen = 200_000;

    private readonly ConcurrentDictionary<string, DateTimeOffset> _lastSeen = new(StringComparer.Ordinal);
    private readonly MqttSessionRegistry _sessions;
    private readonly TimeProvider _time;

    public MqttDevices(MqttSessionRegistry sessions, TimeProvider time)
    {
        _sessions = sessions;
        _time = time;
    }

    /// <summary>A client's connection ended (not the old connection of a takeover): it was last seen <paramref name="at"/>.</summary>
    public void Disconnected(string clientId, DateTimeOffset at)
    {
        if (_lastSeen.Count >= MaxLastSeen)
        {
            foreach (var key in _lastSeen.OrderBy(static p => p.Value).Take(MaxLastSeen / 2).Select(static p => p.Key).ToArray())
            {
                _lastSeen.TryRemove(key, out _);
            }
        }

        _lastSeen[clientId] = at;
    }

    /// <inheritdoc/>
    public DevicePresence Get(string deviceId)
    {
        var session = _sessions.Find(deviceId);
        if (session?.Connection is { } connection)
        {
            return new DevicePresence(deviceId, true, _time.GetUtcNow(), connection.RemoteEndPoint, connection.ProtocolVersion, connection.ConnectedAt);
        }

        DateTimeOffset? lastSeen = _lastSeen.TryGetValue(deviceId, out var seen) ? seen : session?.DisconnectedAt;
        return new DevicePresence(deviceId, false, lastSeen, null, 0, null);
    }

    /// <inheritdoc cref="IDevicePresence.IsOnline"/>
    public bool IsOnline(string clientId) => _sessions.Find(clientId) is { IsOnline: true };

    /// <inheritdoc/>
    public bool Disconnect(string deviceId) =>
        _sessions.Find(deviceId)?.Connection is { } connection && connection.RequestEnd(MqttEndReason.Administrative, MqttReasonCode.AdministrativeAction);

    /// <inheritdoc/>
    public bool PublishToClient(string clientId, StoredMessage message, object? tag) =>
        _sessions.Find(clientId) is { } session && session.TryDeliverTagged(message, tag);

    /// <inheritdoc/>
    public bool IsDeviceSession(string clientId) => _sessions.Find(clientId) is { } session && MqttIdentity.IsDeviceOwner(session.Owner, clientId);

    /// <inheritdoc/>
    public IPEndPoint? LocalEndPointOf(string clientId) => _sessions.Find(clientId)?.Connection?.LocalEndPoint;
}
