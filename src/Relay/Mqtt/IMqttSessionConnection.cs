using System.Net;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Mqtt;

/// <summary>
/// A network connection as its <see cref="MqttSession"/> sees it: where the session's messages go, and how the
/// connection is ended (takeover, an operator's disconnect). <see cref="MqttConnection"/> is the implementation;
/// tests stand in for it to drive sessions and the registry without sockets. The session calls these members
/// under its own lock, so an implementation takes no lock but its own.
/// </summary>
internal interface IMqttSessionConnection
{
    /// <summary>How many QoS 1/2 PUBLISHes may be unacknowledged: the client's Receive Maximum, capped by ours (§4.9).</summary>
    int SendWindow { get; }

    /// <summary>True once the connection is closing: the session keeps its messages rather than send them here.</summary>
    bool IsClosing { get; }

    /// <summary>The client's address.</summary>
    IPEndPoint? RemoteEndPoint { get; }

    /// <summary>Our address the client reached; null when the transport does not say.</summary>
    IPEndPoint? LocalEndPoint { get; }

    /// <summary>The protocol level spoken (4 = 3.1.1, 5 = 5.0).</summary>
    byte ProtocolVersion { get; }

    /// <summary>When the CONNECT was accepted.</summary>
    DateTimeOffset ConnectedAt { get; }

    /// <summary>Writes a PUBLISH (§3.3) for <paramref name="outgoing"/>, with DUP set when <paramref name="dup"/>.</summary>
    MqttSendResult SendPublish(MqttOutgoing outgoing, bool dup);

    /// <summary>Writes a PUBREL (§3.6) for a QoS 2 message whose PUBREC came back.</summary>
    void SendPubRel(ushort packetId);

    /// <summary>Another connection took the session over [MQTT-3.1.4-3]: v5 gets DISCONNECT 0x8E, then the connection closes.</summary>
    void TakeOver();

    /// <summary>Completes once the connection has ended and let go of its session (its will, if any, published).</summary>
    Task Ended { get; }

    /// <summary>Asks the connection to end; v5 clients get a DISCONNECT with <paramref name="code"/> first. False when it was already ending.</summary>
    bool RequestEnd(MqttEndReason reason, MqttReasonCode code);
}

/// <summary>What became of one PUBLISH handed to a connection.</summary>
internal enum MqttSendResult : byte
{
    Sent,

    /// <summary>Not for this client (too large for it, or QoS 0 while it is congested); counted as a drop.</summary>
    Dropped,

    /// <summary>The connection is closing; the message stays with the session.</summary>
    Closed,
}
