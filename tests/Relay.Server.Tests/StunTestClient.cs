using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Server.Tests;

/// <summary>Builds requests with the codec and exchanges them over a real loopback socket.</summary>
internal static class StunTestClient
{
    public static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(10);

    public delegate void AttributeWriter(ref StunMessageWriter writer);

    public static byte[] Request(StunTransactionId id, AttributeWriter? attributes = null, bool fingerprint = true)
    {
        var buffer = new byte[2048];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), id);
        attributes?.Invoke(ref writer);
        if (fingerprint)
        {
            writer.WriteFingerprint();
        }

        return writer.Written.ToArray();
    }

    /// <summary>An RFC 3489 request: 16-byte transaction id, no cookie.</summary>
    public static byte[] ClassicRequest(StunTransactionId id, uint firstIdWord, AttributeWriter? attributes = null)
    {
        var buffer = new byte[512];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, StunClass.Request), id, firstIdWord);
        attributes?.Invoke(ref writer);
        return writer.Written.ToArray();
    }

    public static Socket UdpClient(IPAddress local)
    {
        var socket = new Socket(local.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(local, 0));
        return socket;
    }

    public static async Task<(byte[] Response, IPEndPoint From)> ExchangeAsync(Socket socket, byte[] request, IPEndPoint server)
    {
        await socket.SendToAsync(request, SocketFlags.None, server);
        return await ReceiveAsync(socket);
    }

    public static async Task<(byte[] Response, IPEndPoint From)> ReceiveAsync(Socket socket)
    {
        var buffer = new byte[65536];
        using var timeout = new CancellationTokenSource(ReplyTimeout);
        var result = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, 0), timeout.Token);
        return (buffer.AsSpan(0, result.ReceivedBytes).ToArray(), (IPEndPoint)result.RemoteEndPoint);
    }

    /// <summary>Reads one STUN message from a stream using the codec's own framing.</summary>
    public static Task<byte[]?> ReadFramedAsync(Stream stream, CancellationToken cancellationToken) =>
        FramedReaders.GetValue(stream, static _ => new FramedReader()).ReadAsync(stream, cancellationToken);

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Stream, FramedReader> FramedReaders = new();

    /// <summary>Keeps bytes that arrived after a message for the next call.</summary>
    private sealed class FramedReader
    {
        private byte[] _pending = [];

        public async Task<byte[]?> ReadAsync(Stream stream, CancellationToken cancellationToken)
        {
            var chunk = new byte[4096];
            while (true)
            {
                var sequence = new ReadOnlySequence<byte>(_pending);
                if (StunMessageReader.TryReadMessage(ref sequence, StunReaderLimits.Default with { MaxMessageSize = 65535 }, out var message, out _) == OperationStatus.Done)
                {
                    _pending = sequence.ToArray();
                    return message.ToArray();
                }

                var read = await stream.ReadAsync(chunk, cancellationToken);
                if (read == 0)
                {
                    return null;
                }

                _pending = [.. _pending, .. chunk.AsSpan(0, read)];
            }
        }
    }

    public static ParsedResponse Parse(byte[] response)
    {
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(response, StunReaderLimits.Default with { MaxMessageSize = 65535 }, out var message, out var error));
        Assert.Equal(StunParseError.None, error);
        var parsed = new ParsedResponse
        {
            Class = message.Header.Class,
            Method = message.Header.Method,
            TransactionId = message.Header.TransactionId,
            MagicCookie = message.Header.MagicCookie,
            FingerprintValid = message.HasFingerprint && message.VerifyFingerprint(),
            HasFingerprint = message.HasFingerprint,
        };
        foreach (var attribute in message)
        {
            parsed.Types.Add(attribute.Type);
            switch ((StunAttributeType)attribute.Type)
            {
                case StunAttributeType.XorMappedAddress:
                    Assert.True(StunAttributeReader.TryReadXorAddress(attribute.Value, message.Header, out var xor));
                    parsed.XorMapped = xor.ToIPEndPoint();
                    break;
                case StunAttributeType.MappedAddress:
                    Assert.True(StunAttributeReader.TryReadAddress(attribute.Value, out var mapped));
                    parsed.Mapped = mapped.ToIPEndPoint();
                    break;
                case StunAttributeType.ResponseOrigin:
                case StunAttributeType.SourceAddress:
                    Assert.True(StunAttributeReader.TryReadAddress(attribute.Value, out var origin));
                    parsed.ResponseOrigin = origin.ToIPEndPoint();
                    break;
                case StunAttributeType.OtherAddress:
                case StunAttributeType.ChangedAddress:
                    Assert.True(StunAttributeReader.TryReadAddress(attribute.Value, out var other));
                    parsed.OtherAddress = other.ToIPEndPoint();
                    break;
                case StunAttributeType.ErrorCode:
                    Assert.True(StunAttributeReader.TryReadErrorCode(attribute.Value, out var code, out var reason));
                    parsed.ErrorCode = code;
                    parsed.Reason = System.Text.Encoding.UTF8.GetString(reason);
                    break;
                case StunAttributeType.UnknownAttributes:
                    var types = new ushort[attribute.Value.Length / 2];
                    StunAttributeReader.ReadUnknownAttributes(attribute.Value, types);
                    parsed.UnknownAttributes = types;
                    break;
                case StunAttributeType.Software:
                    parsed.Software = attribute.Value.ToArray();
                    break;
                case StunAttributeType.Padding:
                    parsed.PaddingLength = attribute.Value.Length;
                    break;
            }
        }

        return parsed;
    }

    internal sealed class ParsedResponse
    {
        public StunClass Class { get; init; }
        public ushort Method { get; init; }
        public StunTransactionId TransactionId { get; init; }
        public uint MagicCookie { get; init; }
        public bool HasFingerprint { get; init; }
        public bool FingerprintValid { get; init; }
        public List<ushort> Types { get; } = [];
        public IPEndPoint? XorMapped { get; set; }
        public IPEndPoint? Mapped { get; set; }
        public IPEndPoint? ResponseOrigin { get; set; }
        public IPEndPoint? OtherAddress { get; set; }
        public int? ErrorCode { get; set; }
        public string? Reason { get; set; }
        public ushort[]? UnknownAttributes { get; set; }
        public byte[]? Software { get; set; }
        public int PaddingLength { get; set; }
    }
}
