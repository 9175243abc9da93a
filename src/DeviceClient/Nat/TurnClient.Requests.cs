using System.Buffers;
using System.Text;
using Relay.Protocol.Stun;

namespace Relay.DeviceClient.Nat;

/// <summary>Writes the method-specific attributes of a request.</summary>
internal delegate void StunAttributeWriter(ref StunMessageWriter writer);

/// <summary>Transactions and the long-term credential mechanism (RFC 8489 §6.2, §9.2).</summary>
public sealed partial class TurnClient
{
    private const int MaxPeersPerRequest = 32;
    private const int RequestBufferSize = 2048;

    // A STUN length field can declare at most 65,532 bytes of attributes (a 16-bit multiple of four).
    private static readonly StunReaderLimits ResponseLimits = new() { MaxMessageSize = StunConstants.HeaderLength + 65532, MaxAttributes = 128 };

    private readonly SemaphoreSlim _requestLock = new(1, 1);
    private readonly object _pendingLock = new();
    private readonly Dictionary<StunTransactionId, PendingTransaction> _pending = [];

    /// <summary>
    /// The long-term key's algorithm (RFC 8489 §9.2.5): SHA-256, signed with MESSAGE-INTEGRITY-SHA256, when
    /// the server offers it ahead of MD5 in PASSWORD-ALGORITHMS; otherwise MD5, signed with MESSAGE-INTEGRITY.
    /// </summary>
    public StunPasswordAlgorithm PasswordAlgorithm => _credentials.Algorithm;

    /// <summary>
    /// Runs one request to success, answering a 401 challenge (RFC 8489 §9.2.4) and a 438 stale nonce
    /// (§9.2.5) with a retry, each a bounded number of times. Returns the validated success response.
    /// The credential state (<see cref="StunLongTermCredentials"/>) changes only while <c>_requestLock</c> is held.
    /// </summary>
    private async Task<byte[]> ExecuteAsync(StunMethod method, StunAttributeWriter attributes, CancellationToken cancellationToken)
    {
        await _requestLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var retries = 0;
            while (true)
            {
                var authenticated = _credentials.Key is not null;
                var response = await TransactAsync(method, attributes, cancellationToken).ConfigureAwait(false);
                var (code, reason) = ReadError(response);
                if (code == 0)
                {
                    return response;
                }

                if (code == 401 && !authenticated && retries++ < 2)
                {
                    _credentials.LearnChallenge(Parse(response));
                    continue;
                }

                if (code == 438 && authenticated && retries++ < 3)
                {
                    _credentials.LearnStaleNonce(Parse(response));
                    continue;
                }

                // RFC 8489 §9.2.5: a 401 to a request that carried credentials means they are wrong; retrying
                // with the same ones would only be refused again.
                throw new TurnErrorException(code, reason);
            }
        }
        finally
        {
            _requestLock.Release();
        }
    }

    private async Task<byte[]> TransactAsync(StunMethod method, StunAttributeWriter attributes, CancellationToken cancellationToken)
    {
        var id = StunTransactionId.NewRandom();
        var request = BuildRequest(method, id, attributes);
        var pending = new PendingTransaction(method, _credentials.Key, _credentials.Algorithm == StunPasswordAlgorithm.Sha256);
        lock (_pendingLock)
        {
            if (_connectionError is { } error)
            {
                throw new IOException("The connection to the TURN server has ended.", error);
            }

            _pending.Add(id, pending);
        }

        try
        {
            var schedule = _options.Retransmission;
            if (Transport == TurnTransport.Udp)
            {
                // RFC 8489 §6.2.1: Rc requests, the RTO doubling each time, then Rm * RTO for the last answer.
                var rto = schedule.InitialRto;
                for (var attempt = 1; attempt <= schedule.MaxRequests; attempt++)
                {
                    await SendRawAsync(request, cancellationToken).ConfigureAwait(false);
                    var wait = attempt == schedule.MaxRequests ? schedule.InitialRto * schedule.LastWaitMultiplier : rto;
                    try
                    {
                        return await pending.Completion.Task.WaitAsync(wait, cancellationToken).ConfigureAwait(false);
                    }
                    catch (TimeoutException)
                    {
                        rto *= 2;
                    }
                }
            }
            else
            {
                // RFC 8489 §6.2.2: over a stream there is no retransmission, only the transaction timeout Ti
                // (39.5 s by default, the same total as the UDP schedule).
                await SendRawAsync(request, cancellationToken).ConfigureAwait(false);
                try
                {
                    return await pending.Completion.Task.WaitAsync(TotalTimeout(schedule), cancellationToken).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                }
            }

            throw new TimeoutException($"No answer from TURN server {Server} to {method}.");
        }
        finally
        {
            lock (_pendingLock)
            {
                _pending.Remove(id);
            }
        }
    }

    private static TimeSpan TotalTimeout(StunClientOptions schedule)
    {
        var total = TimeSpan.Zero;
        var rto = schedule.InitialRto;
        for (var attempt = 1; attempt < schedule.MaxRequests; attempt++)
        {
            total += rto;
            rto *= 2;
        }

        return total + (schedule.InitialRto * schedule.LastWaitMultiplier);
    }

    private byte[] BuildRequest(StunMethod method, StunTransactionId id, StunAttributeWriter attributes)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(RequestBufferSize);
        try
        {
            var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(method, StunClass.Request), id);
            attributes(ref writer);
            if (_options.Retransmission.Software is { Length: > 0 } software)
            {
                writer.WriteAttribute(StunAttributeType.Software, Encoding.UTF8.GetBytes(software));
            }

            _credentials.Sign(ref writer);
            writer.WriteFingerprint();
            return writer.Written.ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static (int Code, string Reason) ReadError(byte[] response)
    {
        var message = Parse(response);
        if (message.Header.Class == StunClass.SuccessResponse)
        {
            return (0, string.Empty);
        }

        // RFC 8489 §14.8: an error response without a readable ERROR-CODE is still an error; 500 says "server fault".
        if (message.TryGetAttribute(StunAttributeType.ErrorCode, out var value) && StunAttributeReader.TryReadErrorCode(value, out var code, out var reason) && code is >= 300 and <= 699)
        {
            return (code, Encoding.UTF8.GetString(reason));
        }

        return (500, "Error response without a valid ERROR-CODE");
    }

    // Responses reach here only after the receive loop parsed them, so this cannot fail.
    private static StunMessage Parse(byte[] response)
    {
        StunMessageReader.TryParse(response, ResponseLimits, out var message, out _);
        return message;
    }

    /// <summary>Hands a response to its transaction if it is one the client can trust.</summary>
    private void CompleteTransaction(in StunMessage message)
    {
        PendingTransaction? pending;
        lock (_pendingLock)
        {
            _pending.TryGetValue(message.Header.TransactionId, out pending);
        }

        // Unknown ids are late answers to finished transactions or forgeries; either way nothing waits.
        if (pending is null || !pending.Accepts(message))
        {
            return;
        }

        pending.Completion.TrySetResult(message.Raw.ToArray());
    }

    private void FailPending(Exception error)
    {
        PendingTransaction[] pending;
        lock (_pendingLock)
        {
            pending = [.. _pending.Values];
        }

        foreach (var transaction in pending)
        {
            transaction.Completion.TrySetException(error);
        }
    }

    private sealed class PendingTransaction(StunMethod method, byte[]? key, bool sha256)
    {
        public TaskCompletionSource<byte[]> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>
        /// RFC 8489 §9.2.5: a success response to an authenticated request must carry a valid integrity
        /// attribute of the algorithm used, or it is discarded as if never received (so a forged or
        /// corrupted answer costs a retransmission, not the transaction). Error responses may be unsigned
        /// (400, 401 and 438 cannot be signed), but a signature that is present must verify. FINGERPRINT,
        /// when present, must match (§14.7).
        /// </summary>
        public bool Accepts(in StunMessage message)
        {
            if (message.Header.Method != (ushort)method || (message.HasFingerprint && !message.VerifyFingerprint()))
            {
                return false;
            }

            if (key is null)
            {
                return true;
            }

            var signed = sha256 ? message.HasMessageIntegritySha256 : message.HasMessageIntegrity;
            var valid = signed && (sha256 ? message.VerifyMessageIntegritySha256(key) : message.VerifyMessageIntegrity(key));
            return message.Header.Class == StunClass.SuccessResponse ? valid : !signed || valid;
        }
    }
}
