using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

// A deleted device leaves nothing behind for a device registered again under its id (review L9).
internal sealed partial class MqttBroker
{
    // A connection stuck in a write must not hold the operator's DELETE for long; its session is then
    // forgotten when it does end (its expiry is 0 by then, and its stored row is deleted below).
    private static readonly TimeSpan ForgetConnectionTimeout = TimeSpan.FromSeconds(10);

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
        if (FindSession(deviceId) is { } state && MqttIdentity.IsDeviceOwner(state.Owner, deviceId))
        {
            MqttConnection? connection;
            lock (state.Sync)
            {
                connection = state.Connection;
            }

            if (connection is not null)
            {
                connection.RequestEnd(MqttEndReason.Administrative, MqttReasonCode.AdministrativeAction);
                await connection.Ended.WaitAsync(ForgetConnectionTimeout, _time, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }

            lock (state.Sync)
            {
                // Not SetExpiry: the session is offline (or ends as not persistent), and the expiry pass counts it.
                state.ExpirySeconds = 0;
            }

            await ExpireSessionsAsync(cancellationToken).ConfigureAwait(false);
            await _sessionStore.DeleteSessionAsync(deviceId, cancellationToken).ConfigureAwait(false);
        }

        foreach (var retained in GetRetained("devices/" + deviceId + "/#"))
        {
            // An empty retained PUBLISH is MQTT's way to delete one [MQTT-3.3.1-10]; subscribers see the clear.
            await PublishAsync(new StoredMessage(retained.Topic, ReadOnlyMemory<byte>.Empty, 0, true, null, null), publisherClientId: null, persistRetained: true, cancellationToken).ConfigureAwait(false);
        }
    }
}
