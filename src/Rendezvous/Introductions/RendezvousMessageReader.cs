using System.Net;
using System.Text.Json;
using Relay.Protocol.Rendezvous;

namespace Relay.Rendezvous.Introductions;

/// <summary>
/// Reads and checks one device → server signalling message (docs/rendezvous.md, "Signalling"): the
/// size bound before any parsing, then the JSON (source-generated, trimming-safe), then the fields
/// the message's type needs. Malformed input is a false return with a reason for the <c>bad-request</c>
/// answer, never an exception to the caller.
/// </summary>
internal static class RendezvousMessageReader
{
    /// <summary>docs/rendezvous.md: "at most 8 KiB".</summary>
    public const int MaxMessageBytes = 8 * 1024;

    /// <summary>docs/rendezvous.md: "at most 32 candidates".</summary>
    public const int MaxCandidates = 32;

    public const int MaxRequestIdLength = 64;
    public const int MaxPeerLength = 128;
    public const int MaxRejectMessageLength = 256;

    /// <summary>A direct path found later than this is not a punch we want in the histogram; the value is ignored.</summary>
    public const long MaxMillisecondsToDirect = 3_600_000;

    private static readonly string[] CandidateTypes = ["host", "srflx", "prflx", "relay"];

    /// <summary>
    /// Parses <paramref name="payload"/>; on failure <paramref name="message"/> is whatever could be parsed
    /// (so the error can carry its sessionId or requestId) or null, and <paramref name="problem"/> says why.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> payload, out RendezvousMessage? message, out string problem)
    {
        message = null;
        if (payload.Length > MaxMessageBytes)
        {
            problem = $"message is {payload.Length} bytes; at most {MaxMessageBytes}";
            return false;
        }

        try
        {
            // The depth bound keeps a hostile nesting from costing stack; the contract nests two levels.
            var reader = new Utf8JsonReader(payload, new JsonReaderOptions { MaxDepth = 8 });
            message = JsonSerializer.Deserialize(ref reader, RendezvousJsonContext.Default.RendezvousMessage);
        }
        catch (JsonException)
        {
            // System.Text.Json reports malformed input only by throwing; it stops here, on a cold path.
            problem = "not a JSON rendezvous message (an object with a string 'type')";
            return false;
        }

        if (message is null)
        {
            problem = "not a JSON rendezvous message (an object with a string 'type')";
            return false;
        }

        problem = Check(message) ?? string.Empty;
        return problem.Length == 0;
    }

    private static string? Check(RendezvousMessage m) => m.Type switch
    {
        RendezvousMessageTypes.TurnCredentialsRequest => CheckRequestId(m.RequestId),
        RendezvousMessageTypes.NatReport => NatKinds.IsKnown(m.Nat) ? null : NatProblem(m.Nat),
        RendezvousMessageTypes.Connect => CheckSessionId(m.SessionId) ?? CheckPeer(m.Peer) ?? CheckCandidates(m.Candidates) ?? CheckOptionalNat(m.Nat),
        RendezvousMessageTypes.Answer => CheckSessionId(m.SessionId) ?? CheckCandidates(m.Candidates) ?? CheckOptionalNat(m.Nat),
        RendezvousMessageTypes.Reject => CheckSessionId(m.SessionId) ?? (m.Message is { Length: > MaxRejectMessageLength } ? $"'message' is longer than {MaxRejectMessageLength} characters" : null),
        RendezvousMessageTypes.Result => CheckSessionId(m.SessionId) ?? CheckPath(m.Path) ?? (m.MillisecondsToDirect is < 0 ? "'millisecondsToDirect' is negative" : null),
        RendezvousMessageTypes.Offer or RendezvousMessageTypes.Start or RendezvousMessageTypes.Error or RendezvousMessageTypes.TurnCredentials => $"'{m.Type}' is sent by the server, not by a device",
        _ => $"unknown type '{Truncate(m.Type)}'",
    };

    /// <summary>32 lower-case hex digits (RendezvousMessage.SessionId).</summary>
    public static bool IsSessionId(string? id)
    {
        if (id is not { Length: 32 })
        {
            return false;
        }

        foreach (var c in id)
        {
            if (!char.IsAsciiHexDigitLower(c) && !char.IsAsciiDigit(c))
            {
                return false;
            }
        }

        return true;
    }

    private static string? CheckSessionId(string? id) => IsSessionId(id) ? null : "'sessionId' must be 32 lower-case hex digits";

    private static string? CheckRequestId(string? id) =>
        id is { Length: > 0 and <= MaxRequestIdLength } && !id.Any(char.IsControl) ? null : $"'requestId' must be 1..{MaxRequestIdLength} printable characters";

    private static string? CheckPeer(string? peer) =>
        peer is { Length: > 0 and <= MaxPeerLength } ? null : $"'peer' must be a device id (1..{MaxPeerLength} characters)";

    private static string? CheckOptionalNat(string? nat) => nat is null || NatKinds.IsKnown(nat) ? null : NatProblem(nat);

    private static string NatProblem(string? nat) => $"'nat' must be one of {string.Join(", ", NatKinds.Names)} (was '{Truncate(nat)}')";

    private static string? CheckPath(string? path) =>
        Array.IndexOf(RendezvousMetrics.Paths, path) >= 0 ? null : "'path' must be direct, relayed or failed";

    /// <summary>RFC 8445 §5.1.1 candidates: a known type, an IP address (no names: the peer must not resolve anything), a port, a priority (§5.1.2: 1..2^31-1).</summary>
    private static string? CheckCandidates(IReadOnlyList<RendezvousCandidate>? candidates)
    {
        if (candidates is null)
        {
            return null;
        }

        if (candidates.Count > MaxCandidates)
        {
            return $"{candidates.Count} candidates; at most {MaxCandidates}";
        }

        foreach (var c in candidates)
        {
            if (c is null || Array.IndexOf(CandidateTypes, c.Type) < 0 || c.Address is not { Length: <= 45 } || !IPAddress.TryParse(c.Address, out _) || c.Port is < 1 or > 65535 || c.Priority is < 0 or > int.MaxValue)
            {
                return "each candidate needs type host|srflx|prflx|relay, an IP address, a port 1..65535 and a priority 0..2147483647";
            }
        }

        return null;
    }

    private static string Truncate(string? text) => text is null ? string.Empty : text.Length <= 32 ? text : text[..32] + "…";
}
