using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>The credentials a request proved, used to sign its response (RFC 8489 §9.2.4); default when it proved none.</summary>
internal readonly ref struct TurnAuthentication
{
    public TurnAuthentication(ReadOnlySpan<byte> key, bool sha256Integrity, StunPasswordAlgorithm algorithm, ReadOnlySpan<byte> username)
    {
        Key = key;
        Sha256Integrity = sha256Integrity;
        Algorithm = algorithm;
        Username = username;
        Ok = true;
    }

    public bool Ok { get; }

    public ReadOnlySpan<byte> Key { get; }

    /// <summary>The request carried MESSAGE-INTEGRITY-SHA256, so its response does too.</summary>
    public bool Sha256Integrity { get; }

    public StunPasswordAlgorithm Algorithm { get; }

    public ReadOnlySpan<byte> Username { get; }
}

/// <summary>
/// Ends every TURN response the same way and counts it: SOFTWARE, then integrity of the kind the request
/// authenticated with, then FINGERPRINT.
/// </summary>
internal sealed class TurnResponseWriter(byte[] software, TurnMetrics metrics)
{
    /// <summary>An error response with ERROR-CODE, signed when the request authenticated.</summary>
    public int Error(in StunHeader header, Span<byte> response, int code, ReadOnlySpan<byte> reason, in TurnAuthentication auth = default) =>
        Error(header, response, code, reason, default, auth);

    /// <summary>420 Unknown Attribute, listing them in UNKNOWN-ATTRIBUTES.</summary>
    public int UnknownAttributes(in StunHeader header, Span<byte> response, ReadOnlySpan<ushort> unknown, in TurnAuthentication auth) =>
        Error(header, response, 420, "Unknown Attribute"u8, unknown, auth);

    /// <summary>SOFTWARE, then integrity of the kind the request used when it authenticated, then FINGERPRINT.</summary>
    public int Finish(ref StunMessageWriter writer, in TurnAuthentication auth, int code)
    {
        if (software.Length > 0)
        {
            writer.WriteAttribute(StunAttributeType.Software, software);
        }

        if (auth.Ok)
        {
            if (auth.Sha256Integrity)
            {
                writer.WriteMessageIntegritySha256(auth.Key);
            }
            else
            {
                writer.WriteMessageIntegrity(auth.Key);
            }
        }

        writer.WriteFingerprint();
        metrics.Response(code);
        return writer.Length;
    }

    private int Error(in StunHeader header, Span<byte> response, int code, ReadOnlySpan<byte> reason, ReadOnlySpan<ushort> unknown, in TurnAuthentication auth)
    {
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(header.Method, StunClass.ErrorResponse), header.TransactionId);
        writer.WriteErrorCode(code, reason);
        if (!unknown.IsEmpty)
        {
            writer.WriteUnknownAttributes(unknown);
        }

        return Finish(ref writer, auth, code);
    }
}
