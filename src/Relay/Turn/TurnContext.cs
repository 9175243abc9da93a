using System.Net.Sockets;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;

namespace Relay.Server.Turn;

/// <summary>Where a TURN message arrived, and how to reach its sender again.</summary>
/// <param name="Client">The client's transport address as the server sees it.</param>
/// <param name="Server">The server's transport address the message reached.</param>
/// <param name="Transport">UDP, TCP or TLS.</param>
/// <param name="UdpSocket">For UDP: the listening socket that received the message.</param>
/// <param name="Stream">For TCP and TLS: the connection's output.</param>
internal readonly record struct TurnContext(StunAddress Client, StunAddress Server, StunTransport Transport, Socket? UdpSocket, StreamClientSink? Stream)
{
    public TurnFiveTuple FiveTuple => new(Client, Server, Transport);
}
