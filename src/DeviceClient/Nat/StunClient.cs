using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.DeviceClient.Nat;

/// <summary>Retransmission settings for STUN over UDP (RFC 8489 §6.2.1).</summary>
public sealed class StunClientOptions
{
    /// <summary>Initial retransmission timeout; RFC 8489 recommends 500 ms or more.</summary>
    public TimeSpan InitialRto { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Rc: requests sent in total before giving up (RFC 8489 default 7).</summary>
    public int MaxRequests { get; set; } = 7;

    /// <summary>Rm: after the last request, wait this many times <see cref="InitialRto"/> for an answer (RFC 8489 default 16).</summary>
    public int LastWaitMultiplier { get; set; } = 16;

    /// <summary>SOFTWARE sent with each request; null to send none.</summary>
    public string? Software { get; set; } = "Relay.DeviceClient";
}

/// <summary>What a STUN server reported about this client.</summary>
/// <param name="MappedAddress">The server-reflexive address: where the server saw the request come from.</param>
/// <param name="ResponseOrigin">RFC 5780 RESPONSE-ORIGIN, when the server supports behaviour discovery.</param>
/// <param name="OtherAddress">RFC 5780 OTHER-ADDRESS, when the server supports behaviour discovery.</param>
/// <param name="RespondedFrom">The endpoint the response actually came from.</param>
public sealed record StunBindingResult(IPEndPoint MappedAddress, IPEndPoint? ResponseOrigin, IPEndPoint? OtherAddress, IPEndPoint RespondedFrom);

/// <summary>The server answered with a STUN error response (RFC 8489 §14.8).</summary>
public sealed class StunErrorResponseException(int code, string reason)
    : Exception($"STUN error {code}: {reason}")
{
    /// <summary>The error code, e.g. 420.</summary>
    public int Code { get; } = code;

    /// <summary>The server's reason phrase.</summary>
    public string Reason { get; } = reason;
}

/// <summary>
/// A STUN Binding client over UDP (RFC 8489 §6.2.1): learns this host's server-reflexive address from
/// any standard STUN server, retransmitting with exponential backoff.
/// </summary>
public static class StunClient
{
    private static readonly StunReaderLimits ResponseLimits = StunReaderLimits.Default with { MaxMessageSize = 65535 };

    /// <summary>Sends a Binding request from a new ephemeral socket.</summary>
    public static async Task<StunBindingResult> BindingAsync(IPEndPoint server, StunClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var socket = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(server.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
        return await BindingAsync(socket, server, changeIp: false, changePort: false, options, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends a Binding request from <paramref name="socket"/>, so the mapping learnt is that socket's.
    /// <paramref name="changeIp"/> and <paramref name="changePort"/> ask an RFC 5780 server to answer
    /// from its other address or port (CHANGE-REQUEST), for NAT filtering tests.
    /// </summary>
    /// <exception cref="TimeoutException">No answer after <see cref="StunClientOptions.MaxRequests"/> requests.</exception>
    /// <exception cref="StunErrorResponseException">The server answered with an error.</exception>
    public static async Task<StunBindingResult> BindingAsync(Socket socket, IPEndPoint server, bool changeIp, bool changePort, StunClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new StunClientOptions();
        var transactionId = StunTransactionId.NewRandom();
        var request = BuildRequest(transactionId, changeIp, changePort, options.Software);
        var buffer = ArrayPool<byte>.Shared.Rent(65536);
        try
        {
            var rto = options.InitialRto;
            for (var attempt = 1; attempt <= options.MaxRequests; attempt++)
            {
                await socket.SendToAsync(request, SocketFlags.None, server, cancellationToken).ConfigureAwait(false);
                var wait = attempt == options.MaxRequests ? options.InitialRto * options.LastWaitMultiplier : rto;
                var result = await ReceiveMatchingAsync(socket, buffer, transactionId, wait, cancellationToken).ConfigureAwait(false);
                if (result is not null)
                {
                    return result;
                }

                rto *= 2;
            }

            throw new TimeoutException($"No STUN response from {server} after {options.MaxRequests} requests.");
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static byte[] BuildRequest(StunTransactionId transactionId, bool changeIp, bool changePort, string? software)
    {
        Span<byte> scratch = stackalloc byte[1024];
        var writer = new StunMessageWriter(scratch, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), transactionId);
        if (changeIp || changePort)
        {
            writer.WriteChangeRequest(changeIp, changePort);
        }

        if (!string.IsNullOrEmpty(software))
        {
            writer.WriteAttribute(StunAttributeType.Software, System.Text.Encoding.UTF8.GetBytes(software));
        }

        writer.WriteFingerprint();
        return writer.Written.ToArray();
    }

    // Waits up to `wait` for the response to this transaction, discarding anything else that arrives
    // (stray datagrams, late answers to earlier transactions).
    private static async Task<StunBindingResult?> ReceiveMatchingAsync(Socket socket, byte[] buffer, StunTransactionId transactionId, TimeSpan wait, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(wait);
        var any = new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (true)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, any, timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return null;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // An ICMP port-unreachable from an earlier send; keep waiting for the real answer.
                continue;
            }

            var result = TryInterpret(buffer.AsSpan(0, received.ReceivedBytes), transactionId, (IPEndPoint)received.RemoteEndPoint);
            if (result is not null)
            {
                return result;
            }
        }
    }

    private static StunBindingResult? TryInterpret(ReadOnlySpan<byte> datagram, StunTransactionId transactionId, IPEndPoint from)
    {
        if (StunMessageReader.TryParse(datagram, ResponseLimits, out var message, out _) != OperationStatus.Done
            || message.Header.TransactionId != transactionId
            || message.Header.IsClassicRfc3489
            || message.Header.Method != (ushort)StunMethod.Binding
            || (message.HasFingerprint && !message.VerifyFingerprint()))
        {
            return null;
        }

        if (message.Header.Class == StunClass.ErrorResponse)
        {
            var code = 0;
            var reason = string.Empty;
            if (message.TryGetAttribute(StunAttributeType.ErrorCode, out var value) && StunAttributeReader.TryReadErrorCode(value, out code, out var reasonBytes))
            {
                reason = System.Text.Encoding.UTF8.GetString(reasonBytes);
            }

            throw new StunErrorResponseException(code, reason);
        }

        if (message.Header.Class != StunClass.SuccessResponse)
        {
            return null;
        }

        // RFC 8489 §14.2: prefer XOR-MAPPED-ADDRESS; MAPPED-ADDRESS only from servers that lack it.
        StunAddress mapped;
        if (message.TryGetAttribute(StunAttributeType.XorMappedAddress, out var xor))
        {
            StunAttributeReader.TryReadXorAddress(xor, message.Header, out mapped);
        }
        else if (message.TryGetAttribute(StunAttributeType.MappedAddress, out var plain))
        {
            StunAttributeReader.TryReadAddress(plain, out mapped);
        }
        else
        {
            return null;
        }

        return new StunBindingResult(mapped.ToIPEndPoint(), ReadOptional(message, StunAttributeType.ResponseOrigin), ReadOptional(message, StunAttributeType.OtherAddress), from);
    }

    private static IPEndPoint? ReadOptional(in StunMessage message, StunAttributeType type) =>
        message.TryGetAttribute(type, out var value) && StunAttributeReader.TryReadAddress(value, out var address) ? address.ToIPEndPoint() : null;
}
