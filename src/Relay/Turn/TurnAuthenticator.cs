using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>A request that failed authentication: the length of the answer written, and its code.</summary>
internal readonly record struct TurnRefusal(int Length, int Code);

/// <summary>
/// The long-term credential mechanism (RFC 8489 §9.2.4) as RFC 8656 §5 applies it to every TURN request:
/// static and REST credentials (<see cref="TurnCredentialStore"/>), nonces (<see cref="TurnNonceService"/>),
/// MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256, and the 400/401/437/438/441 answers.
/// </summary>
internal sealed class TurnAuthenticator
{
    // RFC 8489 §9.2.4: the list a 401 offers, most preferred first; a client echoes it back.
    private static readonly StunPasswordAlgorithm[] OfferedAlgorithms = [StunPasswordAlgorithm.Sha256, StunPasswordAlgorithm.Md5];

    private readonly TurnCredentialStore _credentials;
    private readonly TurnNonceService _nonces;
    private readonly byte[] _realm;
    private readonly TurnResponseWriter _responses;

    public TurnAuthenticator(TurnCredentialStore credentials, TurnNonceService nonces, string realm, TurnResponseWriter responses)
    {
        _credentials = credentials;
        _nonces = nonces;
        _realm = System.Text.Encoding.UTF8.GetBytes(realm);
        _responses = responses;
    }

    /// <summary>
    /// Checks a request's credentials, against the key of <paramref name="allocation"/> (the 5-tuple's
    /// allocation, if any) when the request names its user. On success the key it proved is in
    /// <paramref name="keyBuffer"/> and the result signs the response; otherwise the answer is written into
    /// <paramref name="response"/> and described by <paramref name="refused"/>. Nothing is stored for a
    /// request that fails here: the nonce carries its own expiry and client.
    /// </summary>
    public TurnAuthentication Authenticate(in StunMessage request, in TurnContext context, TurnAllocation? allocation, Span<byte> keyBuffer, Span<byte> response, out TurnRefusal refused)
    {
        var header = request.Header;
        var hasSha1 = request.HasMessageIntegrity;
        var hasSha256 = request.HasMessageIntegritySha256;
        if (!hasSha1 && !hasSha256)
        {
            refused = new TurnRefusal(Challenge(header, context, response, 401, "Unauthorized"u8), 401);
            return default;
        }

        if (!request.TryGetAttribute(StunAttributeType.Username, out var username)
            || !request.TryGetAttribute(StunAttributeType.Realm, out _)
            || !request.TryGetAttribute(StunAttributeType.Nonce, out var nonce))
        {
            // USERHASH is not offered (the nonce does not set the anonymity bit), so it cannot stand in for USERNAME.
            refused = new TurnRefusal(_responses.Error(header, response, 400, "Missing USERNAME, REALM or NONCE"u8), 400);
            return default;
        }

        // RFC 8489 §9.2.4 runs its checks "in the order specified": PASSWORD-ALGORITHM(S) (400), then
        // USERNAME and MESSAGE-INTEGRITY (401), and only then the NONCE (438).
        if (!TrySelectAlgorithm(request, out var algorithm))
        {
            refused = new TurnRefusal(_responses.Error(header, response, 400, "PASSWORD-ALGORITHM(S) do not match the offer"u8), 400);
            return default;
        }

        var keyLength = StunCredentials.KeyLength(algorithm);

        // Later requests on an allocation are checked against the key that created it (RFC 8656 §5).
        var allocationCredentials = allocation is not null && username.SequenceEqual(allocation.UsernameUtf8) && allocation.Algorithm == algorithm;
        var verified = false;
        if (allocationCredentials)
        {
            allocation!.Key.CopyTo(keyBuffer);
            verified = Verify(request, hasSha256, keyBuffer[..keyLength]);
        }
        else
        {
            Span<byte> candidates = stackalloc byte[TurnCredentialStore.MaxCandidates * 32];
            var count = _credentials.GetCandidateKeys(username, algorithm, candidates);
            for (var i = 0; i < count && !verified; i++)
            {
                var key = candidates.Slice(i * keyLength, keyLength);
                if (Verify(request, hasSha256, key))
                {
                    key.CopyTo(keyBuffer);
                    verified = true;
                }
            }
        }

        if (!verified)
        {
            refused = new TurnRefusal(Challenge(header, context, response, 401, "Unauthorized"u8), 401);
            return default;
        }

        if (_nonces.Validate(nonce, context.Client) != NonceCheck.Valid)
        {
            refused = new TurnRefusal(Challenge(header, context, response, 438, "Stale Nonce"u8), 438);
            return default;
        }

        var auth = new TurnAuthentication(keyBuffer[..keyLength], hasSha256, algorithm, username);
        if (allocation is not null && !allocationCredentials)
        {
            // RFC 8656 §5: only a request that "passes authentication" with other credentials than the
            // allocation's is 441 (before, any other USERNAME got 441 unauthenticated, which told an
            // off-path prober whose allocation a 5-tuple holds). An Allocate on a 5-tuple in use is 437
            // (§7.2 step 2). Both are signed with the requester's key, as RFC 8489 §9.2.4 asks.
            refused = header.Method == (ushort)StunMethod.Allocate
                ? new TurnRefusal(_responses.Error(header, response, 437, "Allocation Mismatch"u8, auth), 437)
                : new TurnRefusal(_responses.Error(header, response, 441, "Wrong Credentials"u8, auth), 441);
            return default;
        }

        refused = default;
        return auth;
    }

    private static bool Verify(in StunMessage request, bool sha256, ReadOnlySpan<byte> key) =>
        sha256 ? request.VerifyMessageIntegritySha256(key) : request.VerifyMessageIntegrity(key);

    /// <summary>
    /// RFC 8489 §9.2.4: no PASSWORD-ALGORITHMS and no PASSWORD-ALGORITHM means MD5; otherwise both must be
    /// present, the list must be the one offered, and the choice must be in it.
    /// </summary>
    private static bool TrySelectAlgorithm(in StunMessage request, out StunPasswordAlgorithm algorithm)
    {
        algorithm = StunPasswordAlgorithm.Md5;
        var hasList = request.TryGetAttribute(StunAttributeType.PasswordAlgorithms, out var list);
        var hasChoice = request.TryGetAttribute(StunAttributeType.PasswordAlgorithm, out var choice);
        if (!hasList && !hasChoice)
        {
            return true;
        }

        if (!hasList || !hasChoice || !StunAttributeReader.TryReadPasswordAlgorithm(choice, out algorithm, out _))
        {
            return false;
        }

        var offset = 0;
        var index = 0;
        var chosenOffered = false;
        while (offset < list.Length)
        {
            if (!StunAttributeReader.TryReadPasswordAlgorithmEntry(list, ref offset, out var entry, out _)
                || index >= OfferedAlgorithms.Length || entry != OfferedAlgorithms[index])
            {
                return false;
            }

            chosenOffered |= entry == algorithm;
            index++;
        }

        return index == OfferedAlgorithms.Length && chosenOffered;
    }

    /// <summary>401 or 438 with REALM, a fresh NONCE and the offered PASSWORD-ALGORITHMS (RFC 8489 §9.2.4).</summary>
    private int Challenge(in StunHeader header, in TurnContext context, Span<byte> response, int code, ReadOnlySpan<byte> reason)
    {
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(header.Method, StunClass.ErrorResponse), header.TransactionId);
        writer.WriteErrorCode(code, reason);
        writer.WriteAttribute(StunAttributeType.Realm, _realm);
        Span<byte> nonce = stackalloc byte[TurnNonceService.MaxLength];
        writer.WriteAttribute(StunAttributeType.Nonce, nonce[.._nonces.Write(context.Client, nonce)]);
        writer.WritePasswordAlgorithms(OfferedAlgorithms);
        return _responses.Finish(ref writer, default, code);
    }
}
