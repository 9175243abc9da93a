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
    // A connection stuck in a write must not hold the operator's DELETE for long; its session is then
    // forgotten when it does end (its expiry is 0 by then).
    private static readonly TimeSpan ForgetConnectionTimeout = TimeSpan.FromSeconds(10);

    private readonly MqttSessionRegistry _sessions;
    private readonly MqttRouter _router;
    private readonly MqttRetainedMessages _retained;
    private readonly IMqttSessionStore _store;
    private readonly TimeProvider _time;

    public MqttDevices(MqttSessionRegistry sessions, MqttRouter router, MqttRetainedMessages retained, IMqttSessionStore store, TimeProvider time)
    {
        _sessions = sessions;
        _router = router;
        _retained = retained;
        _store = store;
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
    /// <remarks>
    /// Built from the session's own end paths, so wills, metrics and storage stay as they always are: the live
    /// connection ends (v5: DISCONNECT 0x98) and detaches (publishing its will); the session, offline now, gets
    /// an expiry of 0 and the expiry pass ends it (publishing a delayed will, deleting it from mqtt.db). Only
    /// then are the retained messages under <c>devices/{id}/#</c> cleared, so a retained will cannot outlive
    /// the clear. A session another principal holds under the id is left alone (the device never owned it).
    /// </remarks>
    public async ValueTask ForgetAsync(string deviceId, CancellationToken cancellationToken)
    {
        if (_sessions.Find(deviceId) is { } session && MqttIdentity.IsDeviceOwner(session.Owner, deviceId))
        {
            if (session.Connection is { } connection)
            {
                connection.RequestEnd(MqttEndReason.Administrative, MqttReasonCode.AdministrativeAction);
                await connection.Ended.WaitAsync(ForgetConnectionTimeout, _time, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }

            // A session still attached (the wait ran out) ends with its connection now.
            await _sessions.SetExpiryAsync(session, 0, cancellationToken).ConfigureAwait(false);
            await _sessions.ExpireAsync(cancellationToken).ConfigureAwait(false);
            await _store.DeleteSessionAsync(deviceId, cancellationToken).ConfigureAwait(false);
        }

        foreach (var retained in _retained.Match("devices/" + deviceId + "/#"))
        {
            // An empty retained PUBLISH is MQTT's way to delete one [MQTT-3.3.1-10]; subscribers see the clear.
            var clear = new StoredMessage(retained.Topic, ReadOnlyMemory<byte>.Empty, 0, true, null, null);
            await _router.PublishAsync(clear, publisherClientId: null, persistRetained: true, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public bool PublishToClient(string clientId, StoredMessage message, object? tag) =>
        _sessions.Find(clientId) is { } session && session.TryDeliverTagged(message, tag);

    /// <inheritdoc/>
    public bool IsDeviceSession(string clientId) => _sessions.Find(clientId) is { } session && MqttIdentity.IsDeviceOwner(session.Owner, clientId);

    /// <inheritdoc/>
    public IPEndPoint? LocalEndPointOf(string clientId) => _sessions.Find(clientId)?.Connection?.LocalEndPoint;
}
