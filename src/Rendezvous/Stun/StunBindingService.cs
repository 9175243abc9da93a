using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;

namespace Relay.Rendezvous.Stun;

/// <summary>Which of the server's RFC 5780 sockets a response must leave from.</summary>
[Flags]
public enum StunResponseSource : byte
{
    /// <summary>The socket the request arrived on.</summary>
    Same = 0,
    /// <summary>Same IP address, the other port (CHANGE-REQUEST flag B).</summary>
    OtherPort = 1,
    /// <summary>The other IP address, same port (CHANGE-REQUEST flag A).</summary>
    OtherAddress = 2,
}

/// <summary>Where a request came from and which local socket took it.</summary>
public readonly record struct StunRequestContext(StunAddress Client, StunAddress Local, StunTransport Transport);

/// <summary>A response to send, or none.</summary>
public readonly record struct StunReply(int Length, StunResponseSource Source, ushort ResponsePort)
{
    /// <summary>Nothing to send.</summary>
    public static StunReply None => default;

    /// <summary>True when there is a response.</summary>
    public bool HasResponse => Length > 0;
}

/// <summary>
/// Answers STUN Binding requests (RFC 8489 §6.3, RFC 5780 §6, RFC 3489 compatibility). Transport
/// agnostic and allocation-free per request: listeners pass a received message and a send buffer.
/// </summary>
public sealed partial class StunBindingService
{
    // Room for XOR-MAPPED-ADDRESS, two RFC 5780 addresses, SOFTWARE (763 bytes at most) and FINGERPRINT,
    // or an error with a bounded UNKNOWN-ATTRIBUTES; echoed PADDING comes on top.
    private const int MaxResponseWithoutPadding = 1024;

    private const int MaxUnknownReported = 16;

    // Comprehension-required attributes a Binding request may carry that we accept (and mostly
    // ignore: Binding needs no authentication here, so USERNAME and integrity are not checked).
    private static readonly ushort[] UnderstoodBase =
    [
        (ushort)StunAttributeType.MappedAddress, (ushort)StunAttributeType.Username,
        (ushort)StunAttributeType.MessageIntegrity, (ushort)StunAttributeType.MessageIntegritySha256,
        (ushort)StunAttributeType.ErrorCode, (ushort)StunAttributeType.UnknownAttributes,
        (ushort)StunAttributeType.Realm, (ushort)StunAttributeType.Nonce, (ushort)StunAttributeType.Userhash,
        (ushort)StunAttributeType.PasswordAlgorithm, (ushort)StunAttributeType.XorMappedAddress,
        (ushort)StunAttributeType.Padding, (ushort)StunAttributeType.Priority, (ushort)StunAttributeType.UseCandidate,
    ];

    private static readonly ushort[] UnderstoodRfc5780 =
    [
        .. UnderstoodBase, (ushort)StunAttributeType.ChangeRequest, (ushort)StunAttributeType.ResponsePort,
    ];

    private static readonly StunAddress AnyIPv4 = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Any, 0));
    private static readonly StunAddress AnyIPv6 = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.IPv6Any, 0));

    private readonly StunReaderLimits _limits;
    private readonly byte[] _software;
    private readonly byte[] _classicSoftware;
    private readonly StunMetrics _metrics;
    private readonly ILogger<StunBindingService> _logger;
    private readonly Rfc5780Addresses? _rfc5780;

    /// <summary>Creates the service from validated options.</summary>
    public StunBindingService(IOptions<StunOptions> options, StunMetrics metrics, ILogger<StunBindingService> logger)
    {
        var value = options.Value;
        _limits = StunReaderLimits.Default with { MaxMessageSize = value.MaxMessageSize };
        _software = Encoding.UTF8.GetBytes(value.Software ?? string.Empty);

        // RFC 3489 §11.2.10: SERVER (same code point as SOFTWARE) must be a multiple of 4 bytes long,
        // and classic parsers (stund, coturn's client) reject it otherwise; pad with spaces.
        _classicSoftware = new byte[(_software.Length + 3) & ~3];
        _classicSoftware.AsSpan().Fill((byte)' ');
        _software.CopyTo(_classicSoftware, 0);
        _metrics = metrics;
        _logger = logger;
        _rfc5780 = Rfc5780Addresses.From(value);
    }

    /// <summary>Reader limits listeners must use to frame messages.</summary>
    public StunReaderLimits Limits => _limits;

    /// <summary>Size of the response buffer a listener must pass to <see cref="Handle"/>.</summary>
    public int ResponseBufferSize => MaxResponseWithoutPadding + _limits.MaxMessageSize;

    /// <summary>True when an alternate address is configured and RFC 5780 behaviour discovery is on.</summary>
    public bool BehaviorDiscoveryEnabled => _rfc5780 is not null;

    /// <summary>The primary and alternate addresses, when RFC 5780 is on.</summary>
    public Rfc5780Addresses? BehaviorDiscoveryAddresses => _rfc5780;

    /// <summary>
    /// Handles one message. Returns a reply to send from the socket <see cref="StunReply.Source"/> names,
    /// or <see cref="StunReply.None"/> after counting why not.
    /// </summary>
    public StunReply Handle(ReadOnlySpan<byte> message, in StunRequestContext context, Span<byte> response)
    {
        var status = StunMessageReader.TryParse(message, _limits, out var request, out var error);
        if (status != OperationStatus.Done)
        {
            return Reject(message, context, response, status, error);
        }

        var header = request.Header;
        if (header.Class != StunClass.Request)
        {
            // Indications (RFC 8489 §6.3.2, e.g. keepalives) and stray responses get no answer.
            _metrics.Drop(context.Transport, StunDropReason.NotRequest);
            return StunReply.None;
        }

        var classic = header.IsClassicRfc3489;
        _metrics.Request(context.Transport, classic);

        // RFC 8489 §7.3: a FINGERPRINT that does not verify means the message is not STUN.
        if (request.HasFingerprint && !request.VerifyFingerprint())
        {
            _metrics.Drop(context.Transport, StunDropReason.NotStun);
            LogBadFingerprint(context.Client);
            return StunReply.None;
        }

        if (header.Method != (ushort)StunMethod.Binding)
        {
            return Error(header, context, response, 400, "Unsupported method"u8, default);
        }

        var rfc5780 = _rfc5780 is not null && _rfc5780.Covers(context.Local) ? _rfc5780 : null;

        // RFC 8489 §6.3.1.1: unknown comprehension-required attributes earn a 420 listing them.
        Span<ushort> unknown = stackalloc ushort[MaxUnknownReported];
        var unknownCount = request.CollectUnknownComprehensionRequired(rfc5780 is null ? UnderstoodBase : UnderstoodRfc5780, unknown);
        if (unknownCount > 0)
        {
            return Error(header, context, response, 420, "Unknown Attribute"u8, unknown[..unknownCount]);
        }

        var source = StunResponseSource.Same;
        ushort responsePort = 0;
        var padding = 0;
        if (rfc5780 is not null)
        {
            if (request.TryGetAttribute(StunAttributeType.ChangeRequest, out var changeValue))
            {
                // RFC 5780 §6.1: changing the response's source only makes sense over UDP.
                if (context.Transport != StunTransport.Udp)
                {
                    return Error(header, context, response, 400, "CHANGE-REQUEST needs UDP"u8, default);
                }

                StunAttributeReader.TryReadChangeRequest(changeValue, out var changeIp, out var changePort);
                source = (changeIp ? StunResponseSource.OtherAddress : 0) | (changePort ? StunResponseSource.OtherPort : 0);
            }

            if (request.TryGetAttribute(StunAttributeType.ResponsePort, out var portValue))
            {
                if (context.Transport != StunTransport.Udp)
                {
                    return Error(header, context, response, 400, "RESPONSE-PORT needs UDP"u8, default);
                }

                StunAttributeReader.TryReadResponsePort(portValue, out responsePort);
            }

            // RFC 5780 §7.6: PADDING probes whether large datagrams survive the path, so the response
            // carries as much. Never more than the request had, so nothing is amplified; UDP only.
            if (context.Transport == StunTransport.Udp && request.TryGetAttribute(StunAttributeType.Padding, out var paddingValue))
            {
                padding = paddingValue.Length;
            }
        }

        var writer = new StunMessageWriter(response, StunHeader.ComposeType(StunMethod.Binding, StunClass.SuccessResponse), header.TransactionId, header.MagicCookie);
        if (classic)
        {
            // RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS; no cookie, no XOR, no FINGERPRINT.
            writer.WriteAddress(StunAttributeType.MappedAddress, context.Client);
            if (rfc5780 is not null)
            {
                writer.WriteAddress(StunAttributeType.SourceAddress, rfc5780.Origin(context.Local, source));
                writer.WriteAddress(StunAttributeType.ChangedAddress, rfc5780.Other(context.Local));
            }
            else if (!context.Local.SameHost(AnyIPv4) && !context.Local.SameHost(AnyIPv6))
            {
                // A wildcard socket does not know which of its addresses the request reached, and an
                // unspecified address would only mislead the client.
                writer.WriteAddress(StunAttributeType.SourceAddress, context.Local);
            }
        }
        else
        {
            writer.WriteXorAddress(StunAttributeType.XorMappedAddress, context.Client);
            if (rfc5780 is not null)
            {
                // RFC 5780 §7.3/§7.4: where the response really came from, and the server's other address.
                writer.WriteAddress(StunAttributeType.ResponseOrigin, rfc5780.Origin(context.Local, source));
                writer.WriteAddress(StunAttributeType.OtherAddress, rfc5780.Other(context.Local));
            }
        }

        if (_software.Length > 0)
        {
            writer.WriteAttribute(StunAttributeType.Software, classic ? _classicSoftware : _software);
        }

        if (padding > 0)
        {
            // Clamp so the whole response, FINGERPRINT included, is no larger than the request.
            var budget = message.Length - writer.Length - StunConstants.AttributeHeaderLength - (classic ? 0 : StunConstants.AttributeHeaderLength + StunConstants.FingerprintLength);
            padding = Math.Min(padding, budget) & ~3;
            if (padding > 0)
            {
                writer.WritePadding(padding);
            }
        }

        if (!classic)
        {
            writer.WriteFingerprint();
        }

        _metrics.Response(context.Transport, 200);
        return new StunReply(writer.Length, source, responsePort);
    }

    private StunReply Reject(ReadOnlySpan<byte> message, in StunRequestContext context, Span<byte> response, OperationStatus status, StunParseError error)
    {
        if (status == OperationStatus.NeedMoreData || error.IsHeaderError())
        {
            // Garbage or a truncated datagram: never answer what may not be STUN (RFC 8489 §6.3).
            _metrics.Drop(context.Transport, error == StunParseError.TooLarge ? StunDropReason.TooLarge : StunDropReason.NotStun);
            LogDropped(context.Client, context.Transport, error);
            return StunReply.None;
        }

        // A well-framed request with a malformed attribute earns 400 (RFC 8489 §6.3.1); anything
        // else that is malformed is silently discarded.
        var header = StunHeader.Read(message);
        if (header.Class != StunClass.Request)
        {
            _metrics.Drop(context.Transport, StunDropReason.NotRequest);
            return StunReply.None;
        }

        _metrics.Request(context.Transport, header.IsClassicRfc3489);
        LogMalformed(context.Client, context.Transport, error);
        return Error(header, context, response, 400, "Malformed attribute"u8, default);
    }

    private StunReply Error(in StunHeader header, in StunRequestContext context, Span<byte> response, int code, ReadOnlySpan<byte> reason, ReadOnlySpan<ushort> unknown)
    {
        var writer = new StunMessageWriter(response, StunHeader.ComposeType(header.Method, StunClass.ErrorResponse), header.TransactionId, header.MagicCookie);
        writer.WriteErrorCode(code, reason);
        if (!unknown.IsEmpty)
        {
            writer.WriteUnknownAttributes(unknown);
        }

        if (_software.Length > 0)
        {
            writer.WriteAttribute(StunAttributeType.Software, header.IsClassicRfc3489 ? _classicSoftware : _software);
        }

        if (!header.IsClassicRfc3489)
        {
            writer.WriteFingerprint();
        }

        _metrics.Response(context.Transport, code);
        return new StunReply(writer.Length, StunResponseSource.Same, 0);
    }

    // Arguments are passed unformatted: LoggerMessage formats only when Debug is on, so a flood of
    // garbage costs no allocation here. Error None means a truncated datagram.
    [LoggerMessage(EventId = 1001, Level = LogLevel.Debug, Message = "Dropped {Transport} packet from {Client}: {Reason}")]
    private partial void LogDropped(StunAddress client, StunTransport transport, StunParseError reason);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Debug, Message = "Malformed STUN request from {Client} over {Transport}: {Error}; answered 400")]
    private partial void LogMalformed(StunAddress client, StunTransport transport, StunParseError error);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Debug, Message = "Dropped STUN request from {Client}: FINGERPRINT does not verify")]
    private partial void LogBadFingerprint(StunAddress client);
}

/// <summary>
/// The RFC 5780 address set of one family: primary and alternate IP, primary and alternate port,
/// so four sockets.
/// </summary>
public sealed class Rfc5780Addresses
{
    private Rfc5780Addresses(StunAddress primary, StunAddress alternate, ushort primaryPort, ushort alternatePort)
    {
        Primary = primary;
        Alternate = alternate;
        PrimaryPort = primaryPort;
        AlternatePort = alternatePort;
    }

    /// <summary>Primary IP address (port 0).</summary>
    public StunAddress Primary { get; }

    /// <summary>Alternate IP address (port 0).</summary>
    public StunAddress Alternate { get; }

    /// <summary>Primary port.</summary>
    public ushort PrimaryPort { get; }

    /// <summary>Alternate port.</summary>
    public ushort AlternatePort { get; }

    /// <summary>The four local endpoints to bind.</summary>
    public IEnumerable<StunAddress> Endpoints =>
    [
        Primary.WithPort(PrimaryPort), Primary.WithPort(AlternatePort),
        Alternate.WithPort(PrimaryPort), Alternate.WithPort(AlternatePort),
    ];

    /// <summary>Builds the set from options; null when no alternate address is configured.</summary>
    public static Rfc5780Addresses? From(StunOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.AlternateAddress) || !IPAddress.TryParse(options.AlternateAddress, out var alternate))
        {
            return null;
        }

        var primary = options.ListenAddresses
            .Select(static text => IPAddress.TryParse(text, out var address) ? address : null)
            .FirstOrDefault(address => address is not null && address.AddressFamily == alternate.AddressFamily);
        if (primary is null)
        {
            return null;
        }

        return new Rfc5780Addresses(
            StunAddress.FromEndPoint(new IPEndPoint(primary, 0)),
            StunAddress.FromEndPoint(new IPEndPoint(alternate, 0)),
            (ushort)options.Port,
            (ushort)options.EffectiveAlternatePort);
    }

    /// <summary>True if <paramref name="local"/> is one of the four endpoints.</summary>
    public bool Covers(in StunAddress local) =>
        (local.SameHost(Primary) || local.SameHost(Alternate)) && (local.Port == PrimaryPort || local.Port == AlternatePort);

    /// <summary>The endpoint a response leaves from, given the socket that received the request.</summary>
    public StunAddress Origin(in StunAddress local, StunResponseSource source)
    {
        var host = (source & StunResponseSource.OtherAddress) != 0 ? OtherHost(local) : local.WithPort(0);
        var port = (source & StunResponseSource.OtherPort) != 0 ? OtherPort(local) : local.Port;
        return host.WithPort(port);
    }

    /// <summary>OTHER-ADDRESS: the other IP and the other port (RFC 5780 §7.4).</summary>
    public StunAddress Other(in StunAddress local) => OtherHost(local).WithPort(OtherPort(local));

    private StunAddress OtherHost(in StunAddress local) => local.SameHost(Primary) ? Alternate : Primary;

    private ushort OtherPort(in StunAddress local) => local.Port == PrimaryPort ? AlternatePort : PrimaryPort;

    /// <summary>The address family of this set.</summary>
    public AddressFamily Family => Primary.Family;
}
