using System.Text.Json.Serialization;

namespace Relay.Protocol.Rendezvous;

/// <summary>
/// One rendezvous signalling message, carried as the UTF-8 JSON body of an MQTT PUBLISH on the device's
/// own connection (docs/rendezvous.md): device → server on <c>devices/{id}/rendezvous/out</c>, server →
/// device on <c>devices/{id}/rendezvous/in</c>. One flat shape for every <see cref="Type"/>, so the
/// (trimming-safe, source-generated) serializer needs no polymorphism; each type uses the fields the
/// table in docs/rendezvous.md gives it and leaves the rest null.
/// </summary>
public sealed record RendezvousMessage
{
    /// <summary>What this message is: one of <see cref="RendezvousMessageTypes"/>.</summary>
    public required string Type { get; init; }

    /// <summary>The introduction this message belongs to: 32 lower-case hex digits chosen by the requester.</summary>
    public string? SessionId { get; init; }

    /// <summary>Matches a <c>turn-credentials</c> answer to its request.</summary>
    public string? RequestId { get; init; }

    /// <summary>The other device: whom to reach (connect) or who is reaching (offer, answer).</summary>
    public string? Peer { get; init; }

    /// <summary>The sender's candidates (connect, answer from a device) or the peer's (offer, answer from the server).</summary>
    public IReadOnlyList<RendezvousCandidate>? Candidates { get; init; }

    /// <summary>The session key (base64 of 32 random bytes) for MESSAGE-INTEGRITY on connectivity checks; server → device only.</summary>
    public string? Key { get; init; }

    /// <summary><c>controlling</c> (the requester, which nominates the pair) or <c>controlled</c>.</summary>
    public string? Role { get; init; }

    /// <summary>A NAT classification (a <c>NatType</c> name, e.g. <c>Symmetric</c>): the sender's own, or the peer's when the server sends it.</summary>
    public string? Nat { get; init; }

    /// <summary>For <c>result</c>: <c>direct</c>, <c>relayed</c> or <c>failed</c>.</summary>
    public string? Path { get; init; }

    /// <summary>For <c>result</c>: milliseconds from start to the first successful direct check, when direct.</summary>
    public long? MillisecondsToDirect { get; init; }

    /// <summary>For <c>error</c>: one of <see cref="RendezvousErrorCodes"/>.</summary>
    public string? Code { get; init; }

    /// <summary>For <c>error</c> and <c>reject</c>: what a person should read.</summary>
    public string? Message { get; init; }

    /// <summary>For <c>turn-credentials</c>: time-limited TURN credentials and where to use them.</summary>
    public RendezvousTurnCredentials? Turn { get; init; }
}

/// <summary>An ICE-style transport candidate (RFC 8445 §5.1.1): where the sender may be reached over UDP.</summary>
/// <param name="Type"><c>host</c>, <c>srflx</c> (server-reflexive, from STUN) or <c>relay</c> (a TURN relayed address).</param>
/// <param name="Address">The IP address, as text.</param>
/// <param name="Port">The UDP port.</param>
/// <param name="Priority">RFC 8445 §5.1.2 priority; higher is tried first.</param>
public sealed record RendezvousCandidate(string Type, string Address, int Port, long Priority);

/// <summary>Time-limited TURN credentials (draft-uberti-behave-turn-rest-00) minted by the server for one device.</summary>
/// <param name="Username"><c>expiry:deviceId</c>.</param>
/// <param name="Password">base64(HMAC-SHA1(shared secret, username)).</param>
/// <param name="TtlSeconds">Seconds the credentials stay valid.</param>
/// <param name="Uris">RFC 7065 URIs: <c>turn:host:port?transport=udp</c>, <c>turn:host:port?transport=tcp</c>, and <c>stun:host:port</c>.</param>
public sealed record RendezvousTurnCredentials(string Username, string Password, long TtlSeconds, IReadOnlyList<string> Uris);

/// <summary>The values of <see cref="RendezvousMessage.Type"/>.</summary>
public static class RendezvousMessageTypes
{
    /// <summary>Device → server: mint TURN credentials for me (<c>requestId</c>).</summary>
    public const string TurnCredentialsRequest = "turn-credentials-request";

    /// <summary>Server → device: the answer to <see cref="TurnCredentialsRequest"/> (<c>requestId</c>, <c>turn</c>).</summary>
    public const string TurnCredentials = "turn-credentials";

    /// <summary>Device → server: my NAT classification (<c>nat</c>), shown in the device's presence.</summary>
    public const string NatReport = "nat";

    /// <summary>Device → server: introduce me to <c>peer</c> (<c>sessionId</c>, <c>candidates</c>, <c>nat</c>).</summary>
    public const string Connect = "connect";

    /// <summary>Server → the peer being reached: <c>peer</c> wants to connect (<c>sessionId</c>, <c>candidates</c>, <c>nat</c>, <c>key</c>, <c>role</c>).</summary>
    public const string Offer = "offer";

    /// <summary>
    /// Device → server: my candidates for an offer (<c>sessionId</c>, <c>candidates</c>, <c>nat</c>). Server →
    /// requester: the peer's candidates (<c>sessionId</c>, <c>peer</c>, <c>candidates</c>, <c>nat</c>, <c>key</c>, <c>role</c>); sent
    /// at the same moment as <see cref="Start"/> to the peer, which is the synchronized start of the checks.
    /// </summary>
    public const string Answer = "answer";

    /// <summary>Server → the peer being reached: begin connectivity checks now (<c>sessionId</c>).</summary>
    public const string Start = "start";

    /// <summary>Device → server: I decline this offer (<c>sessionId</c>, <c>message</c>).</summary>
    public const string Reject = "reject";

    /// <summary>Device → server: how the session ended up (<c>sessionId</c>, <c>path</c>, <c>millisecondsToDirect</c>), for metrics.</summary>
    public const string Result = "result";

    /// <summary>Server → device: a request failed (<c>sessionId</c> or <c>requestId</c>, <c>code</c>, <c>message</c>).</summary>
    public const string Error = "error";
}

/// <summary>The values of <see cref="RendezvousMessage.Code"/> in an <c>error</c>.</summary>
public static class RendezvousErrorCodes
{
    /// <summary>The authorization policy does not let the requester reach that peer.</summary>
    public const string Forbidden = "forbidden";

    /// <summary>The peer is not connected.</summary>
    public const string Offline = "offline";

    /// <summary>No such device (only said to requesters that may know about it: otherwise <see cref="Forbidden"/>).</summary>
    public const string UnknownPeer = "unknown-peer";

    /// <summary>Too many introductions; retry later.</summary>
    public const string RateLimited = "rate-limited";

    /// <summary>The peer did not answer the offer in time.</summary>
    public const string Timeout = "timeout";

    /// <summary>The peer declined.</summary>
    public const string Rejected = "rejected";

    /// <summary>The message was not understood (bad JSON, missing field, unknown session).</summary>
    public const string BadRequest = "bad-request";

    /// <summary>The server cannot mint TURN credentials (TURN is disabled, or it cannot name its address for this connection).</summary>
    public const string Unavailable = "unavailable";
}

/// <summary>Source-generated (trimming- and AOT-safe) JSON for the signalling messages: camelCase, nulls omitted.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RendezvousMessage))]
public sealed partial class RendezvousJsonContext : JsonSerializerContext;
