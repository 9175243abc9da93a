namespace Relay.Server.Mqtt;

/// <summary>What <see cref="MqttSession.Detach"/> did.</summary>
internal enum MqttDetach : byte
{
    /// <summary>The session had moved to another connection (takeover): nothing changed.</summary>
    NotAttached,

    /// <summary>The session was not persistent and ended with its connection.</summary>
    Ended,

    /// <summary>The session is persistent and now offline.</summary>
    Offline,
}

/// <summary>What a PUBREC did to the message in flight (<see cref="MqttSession.AcknowledgePubRec"/>).</summary>
internal enum MqttPubRecOutcome : byte
{
    /// <summary>No QoS 2 message in flight has that packet id.</summary>
    UnknownPacketId,

    /// <summary>The PUBREC carried a failure: the exchange ended there (§4.3.3).</summary>
    Ended,

    /// <summary>Released: PUBREL is what goes (and what a resend repeats).</summary>
    Release,
}

/// <summary>What an inbound QoS 2 PUBLISH is to the session (<see cref="MqttSession.CheckInboundQoS2"/>).</summary>
internal enum MqttInboundQoS2 : byte
{
    New,

    /// <summary>A resend of one not yet released: acknowledged again, not delivered again [MQTT-4.3.3-10].</summary>
    Duplicate,

    /// <summary>More unacknowledged QoS 2 PUBLISHes than our Receive Maximum [MQTT-3.3.4-9].</summary>
    OverLimit,
}
