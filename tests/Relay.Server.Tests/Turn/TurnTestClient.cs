using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Rendezvous.Stun;
using Relay.Server.Turn;
using static Relay.Server.Tests.StunTestClient;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// A small TURN client (RFC 8656) over a real loopback socket, built on our own codec: UDP datagrams, or a
/// TCP stream framed by the STUN length field and the ChannelData length (padded to 4, RFC 8656 §12.5).
/// It does the long-term credential dance of RFC 8489 §9.2: an unauthenticated first request earns a 401
/// with REALM, NONCE and PASSWORD-ALGORITHMS; the retry carries USERNAME, REALM, NONCE and
/// MESSAGE-INTEGRITY (MD5 key) or, when <see cref="Algorithm"/> is SHA-256, PASSWORD-ALGORITHMS echoed,
/// PASSWORD-ALGORITHM and MESSAGE-INTEGRITY-SHA256. Every wait is bounded by a cancellation timeout.
/// </summary>
internal sealed class TurnTestClient : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly Socket? _udp;
    private readonly TcpClient? _tcp;
    private readonly NetworkStream? _stream;
    private readonly Queue<TurnFrame> _unsolicited = new();
    private readonly byte[] _receiveBuffer = new byte[70000];
    private byte[] _pending = [];

    private TurnTestClient(IPEndPoint server, Socket? udp, TcpClient? tcp, string username, string password)
    {
        Server = server;
        _udp = udp;
        _tcp = tcp;
        _stream = tcp?.GetStream();
        Username = username;
        Password = password;
        Local = (IPEndPoint)(udp?.LocalEndPoint ?? tcp!.Client.LocalEndPoint)!;
    }

    public IPEndPoint Server { get; }

    /// <summary>The client's transport address: what the server sees as the client half of the 5-tuple.</summary>
    public IPEndPoint Local { get; }

    public bool IsStream => _tcp is not null;

    public StunTransport Transport => IsStream ? StunTransport.Tcp : StunTransport.Udp;

    public string Username { get; set; }

    public string Password { get; set; }

    /// <summary>MD5 unless set: then PASSWORD-ALGORITHMS is echoed and MESSAGE-INTEGRITY-SHA256 used (RFC 8489 §9.2.5).</summary>
    public StunPasswordAlgorithm Algorithm { get; set; } = StunPasswordAlgorithm.Md5;

    /// <summary>When set, replaces the PASSWORD-ALGORITHMS value echoed to the server (to test the 400 of RFC 8489 §9.2.4).</summary>
    public byte[]? EchoedAlgorithmsOverride { get; set; }

    public string Realm { get; private set; } = "relay";

    public byte[]? Nonce { get; set; }

    /// <summary>The raw PASSWORD-ALGORITHMS value of the last challenge.</summary>
    public byte[]? OfferedAlgorithms { get; private set; }

    /// <summary>XOR-RELAYED-ADDRESS of the last successful Allocate.</summary>
    public IPEndPoint? Relayed { get; private set; }

    public TurnFiveTuple FiveTuple => new(StunAddress.FromEndPoint(Local), StunAddress.FromEndPoint(Server), Transport);

    /// <summary>The long-term key (RFC 8489 §9.2.2) for the current username, realm, password and algorithm.</summary>
    public byte[] Key
    {
        get
        {
            var key = new byte[StunCredentials.KeyLength(Algorithm)];
            StunCredentials.ComputeLongTermKey(Algorithm, Username, Realm, Password, key);
            return key;
        }
    }

    public static TurnTestClient Udp(RelayTestServer server, string username, string password, IPAddress? local = null)
    {
        var address = local ?? IPAddress.Loopback;
        var socket = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(address, 0));
        return new TurnTestClient(new IPEndPoint(address.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Loopback : IPAddress.IPv6Loopback, server.StunPort), socket, null, username, password);
    }

    public static async Task<TurnTestClient> TcpAsync(RelayTestServer server, string username, string password)
    {
        var tcp = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true };
        try
        {
            using var timeout = new CancellationTokenSource(Timeout);
            await tcp.ConnectAsync(new IPEndPoint(IPAddress.Loopback, server.StunPort), timeout.Token);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }

        return new TurnTestClient(new IPEndPoint(IPAddress.Loopback, server.StunPort), null, tcp, username, password);
    }

    public ValueTask DisposeAsync()
    {
        _udp?.Dispose();
        _stream?.Dispose();
        _tcp?.Dispose();
        return ValueTask.CompletedTask;
    }

    // ---- message building ----

    /// <summary>A TURN message; with <paramref name="authenticate"/> it carries the long-term credentials.</summary>
    public byte[] Build(StunMethod method, AttributeWriter? attributes = null, bool authenticate = true, StunTransactionId? id = null, StunClass messageClass = StunClass.Request, bool fingerprint = true)
    {
        var buffer = new byte[70000];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(method, messageClass), id ?? StunTransactionId.NewRandom());
        attributes?.Invoke(ref writer);
        if (authenticate)
        {
            WriteCredentials(ref writer);
        }

        if (fingerprint)
        {
            writer.WriteFingerprint();
        }

        return writer.Written.ToArray();
    }

    /// <summary>USERNAME, REALM, NONCE, the algorithm attributes when not MD5, then the integrity attribute (RFC 8489 §9.2.3).</summary>
    public void WriteCredentials(ref StunMessageWriter writer, bool username = true, bool realm = true, bool nonce = true, bool algorithms = true, bool algorithm = true)
    {
        var key = Key;
        if (username)
        {
            writer.WriteAttribute(StunAttributeType.Username, Encoding.UTF8.GetBytes(Username));
        }

        if (realm)
        {
            writer.WriteAttribute(StunAttributeType.Realm, Encoding.UTF8.GetBytes(Realm));
        }

        if (nonce)
        {
            writer.WriteAttribute(StunAttributeType.Nonce, Nonce ?? throw new InvalidOperationException("No NONCE yet: send a request first"));
        }

        if (Algorithm != StunPasswordAlgorithm.Md5 || EchoedAlgorithmsOverride is not null)
        {
            if (algorithms)
            {
                writer.WriteAttribute(StunAttributeType.PasswordAlgorithms, EchoedAlgorithmsOverride ?? OfferedAlgorithms!);
            }

            if (algorithm)
            {
                writer.WritePasswordAlgorithm(Algorithm);
            }
        }

        if (Algorithm == StunPasswordAlgorithm.Sha256)
        {
            writer.WriteMessageIntegritySha256(key);
        }
        else
        {
            writer.WriteMessageIntegrity(key);
        }
    }

    public static AttributeWriter RequestedTransport(byte protocol) => (ref StunMessageWriter w) => w.BeginAttribute((ushort)StunAttributeType.RequestedTransport, 4)[0] = protocol;

    public static AttributeWriter UdpTransport => RequestedTransport(17);

    public static void WriteFamily(ref StunMessageWriter writer, StunAttributeType type, byte family)
    {
        var value = writer.BeginAttribute((ushort)type, 4);
        value.Clear();
        value[0] = family;
    }

    public static void WritePeer(ref StunMessageWriter writer, IPEndPoint peer) =>
        writer.WriteXorAddress(StunAttributeType.XorPeerAddress, StunAddress.FromEndPoint(peer));

    /// <summary>An IPv6 XOR-PEER-ADDRESS exactly as given, IPv4-mapped forms included (FromEndPoint would unmap them).</summary>
    public static void WriteIPv6Peer(ref StunMessageWriter writer, IPAddress address, ushort port) =>
        writer.WriteXorAddress(StunAttributeType.XorPeerAddress, StunAddress.FromIPv6(address.GetAddressBytes(), port));

    public static void WriteChannelNumber(ref StunMessageWriter writer, ushort channel)
    {
        var value = writer.BeginAttribute((ushort)StunAttributeType.ChannelNumber, 4);
        BinaryPrimitives.WriteUInt16BigEndian(value, channel);
        BinaryPrimitives.WriteUInt16BigEndian(value[2..], 0);
    }

    // ---- transport ----

    public async Task SendRawAsync(byte[] message)
    {
        using var timeout = new CancellationTokenSource(Timeout);
        if (_udp is not null)
        {
            await _udp.SendToAsync(message, SocketFlags.None, Server, timeout.Token);
        }
        else
        {
            await _stream!.WriteAsync(message, timeout.Token);
        }
    }

    /// <summary>The next frame from the server: a STUN message or a ChannelData message.</summary>
    public async Task<TurnFrame> ReceiveFrameAsync()
    {
        using var timeout = new CancellationTokenSource(Timeout);
        if (_udp is not null)
        {
            while (true)
            {
                var result = await _udp.ReceiveFromAsync(_receiveBuffer, SocketFlags.None, new IPEndPoint(_udp.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, 0), timeout.Token);
                if (Server.Equals(result.RemoteEndPoint))
                {
                    return TurnFrame.Parse(_receiveBuffer.AsSpan(0, result.ReceivedBytes).ToArray(), stream: false);
                }
            }
        }

        while (true)
        {
            if (TryTakeStreamFrame(out var frame))
            {
                return frame;
            }

            var read = await _stream!.ReadAsync(_receiveBuffer, timeout.Token);
            if (read == 0)
            {
                throw new EndOfStreamException("The server closed the TURN connection.");
            }

            _pending = [.. _pending, .. _receiveBuffer.AsSpan(0, read)];
        }
    }

    private bool TryTakeStreamFrame(out TurnFrame frame)
    {
        frame = null!;
        if (_pending.Length < 4)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadUInt16BigEndian(_pending.AsSpan(2));

        // RFC 7983 / RFC 8656 §12: 0b01 in the top bits is ChannelData, padded to 4 on streams (§12.5).
        var total = TurnChannel.LooksLikeChannelData(_pending[0]) ? (4 + length + 3) & ~3 : StunConstants.HeaderLength + length;
        if (_pending.Length < total)
        {
            return false;
        }

        frame = TurnFrame.Parse(_pending.AsSpan(0, total).ToArray(), stream: true);
        _pending = _pending.AsSpan(total).ToArray();
        return true;
    }

    /// <summary>Sends a request and returns the response with its transaction id; indications and ChannelData meanwhile are kept.</summary>
    public async Task<TurnMessage> RequestAsync(byte[] request)
    {
        var id = StunHeader.Read(request).TransactionId;
        await SendRawAsync(request);
        while (true)
        {
            var frame = await ReceiveFrameAsync();
            if (frame.Message is { Class: StunClass.SuccessResponse or StunClass.ErrorResponse } response)
            {
                if (response.TransactionId == id)
                {
                    return response;
                }

                continue;
            }

            _unsolicited.Enqueue(frame);
        }
    }

    /// <summary>The next Data indication or ChannelData message (responses to old transactions are skipped).</summary>
    public async Task<TurnFrame> ReceiveDataAsync()
    {
        if (_unsolicited.TryDequeue(out var queued))
        {
            return queued;
        }

        while (true)
        {
            var frame = await ReceiveFrameAsync();
            if (frame.Message is { Class: StunClass.SuccessResponse or StunClass.ErrorResponse })
            {
                continue;
            }

            return frame;
        }
    }

    // ---- the credential dance ----

    /// <summary>Takes REALM, NONCE and PASSWORD-ALGORITHMS from a 401 or 438 (RFC 8489 §9.2.5).</summary>
    public void Learn(TurnMessage challenge)
    {
        Assert.True(challenge.ErrorCode is 401 or 438, $"expected a challenge, got {challenge}");
        Realm = challenge.Realm ?? throw new InvalidOperationException("challenge without REALM");
        Nonce = challenge.Nonce ?? throw new InvalidOperationException("challenge without NONCE");
        OfferedAlgorithms = challenge.PasswordAlgorithms;
    }

    /// <summary>An unauthenticated request, which must earn a 401 challenge that is then learned.</summary>
    public async Task<TurnMessage> ChallengeAsync(StunMethod method = StunMethod.Allocate, AttributeWriter? attributes = null)
    {
        var challenge = await RequestAsync(Build(method, attributes ?? UdpTransport, authenticate: false));
        Assert.Equal(401, challenge.ErrorCode);
        Learn(challenge);
        return challenge;
    }

    /// <summary>
    /// Sends an authenticated request: gets a nonce first if there is none, and retries once with the fresh
    /// nonce of a 438. Any response other than 401/438 must be signed with our key and fingerprinted.
    /// </summary>
    public async Task<TurnMessage> SendAuthenticatedAsync(StunMethod method, AttributeWriter? attributes = null, StunTransactionId? id = null)
    {
        if (Nonce is null)
        {
            await ChallengeAsync();
        }

        var response = await RequestAsync(Build(method, attributes, id: id));
        if (response.ErrorCode == 438)
        {
            Learn(response);
            response = await RequestAsync(Build(method, attributes, id: id));
        }

        if (response.ErrorCode is not (401 or 438 or 400) || response.HasIntegrity)
        {
            AssertSigned(response);
        }

        return response;
    }

    /// <summary>RFC 8489 §9.2.4: a response to an authenticated request carries integrity with the request's key, then FINGERPRINT.</summary>
    public void AssertSigned(TurnMessage response)
    {
        Assert.True(response.HasFingerprint && response.FingerprintValid, $"no valid FINGERPRINT on {response}");
        if (Algorithm == StunPasswordAlgorithm.Sha256)
        {
            Assert.True(response.HasIntegritySha256, $"no MESSAGE-INTEGRITY-SHA256 on {response}");
        }
        else
        {
            Assert.True(response.HasIntegritySha1, $"no MESSAGE-INTEGRITY on {response}");
        }

        Assert.True(response.VerifyIntegrity(Key), $"integrity of {response} does not verify with our key");
    }

    public async Task<TurnMessage> AllocateAsync(AttributeWriter? extra = null, StunTransactionId? id = null)
    {
        var response = await SendAuthenticatedAsync(StunMethod.Allocate, (ref StunMessageWriter w) =>
        {
            UdpTransport(ref w);
            extra?.Invoke(ref w);
        }, id);
        AssertSuccess(response);
        Relayed = response.XorRelayed;
        Assert.NotNull(Relayed);
        return response;
    }

    public async Task CreatePermissionAsync(params IPEndPoint[] peers) =>
        AssertSuccess(await SendAuthenticatedAsync(StunMethod.CreatePermission, (ref StunMessageWriter w) =>
        {
            foreach (var peer in peers)
            {
                WritePeer(ref w, peer);
            }
        }));

    public async Task ChannelBindAsync(ushort channel, IPEndPoint peer) =>
        AssertSuccess(await SendAuthenticatedAsync(StunMethod.ChannelBind, (ref StunMessageWriter w) =>
        {
            WriteChannelNumber(ref w, channel);
            WritePeer(ref w, peer);
        }));

    public Task SendIndicationAsync(IPEndPoint peer, byte[] data) =>
        SendRawAsync(Build(StunMethod.Send, (ref StunMessageWriter w) =>
        {
            WritePeer(ref w, peer);
            w.WriteAttribute(StunAttributeType.Data, data);
        }, authenticate: false, messageClass: StunClass.Indication));

    /// <summary>ChannelData, padded to a multiple of 4 on streams as RFC 8656 §12.5 requires.</summary>
    public Task SendChannelDataAsync(ushort channel, byte[] data) => SendRawAsync(ChannelData(channel, data, pad: IsStream));

    public static byte[] ChannelData(ushort channel, byte[] data, bool pad)
    {
        var frame = new byte[ChannelDataWriter.GetLength(data.Length, pad)];
        ChannelDataWriter.Write(frame, channel, data, pad);
        return frame;
    }

    public static void AssertSuccess(TurnMessage response) =>
        Assert.True(response.Class == StunClass.SuccessResponse, $"expected success, got {response}");

    public static void AssertError(TurnMessage response, int code) =>
        Assert.True(response.Class == StunClass.ErrorResponse && response.ErrorCode == code, $"expected {code}, got {response}");
}

/// <summary>One frame from the server: a parsed STUN message, or ChannelData.</summary>
internal sealed class TurnFrame
{
    public required byte[] Raw { get; init; }

    public TurnMessage? Message { get; init; }

    public ushort Channel { get; init; }

    /// <summary>ChannelData's application data, or a Data indication's DATA.</summary>
    public byte[]? Data { get; init; }

    public bool IsChannelData => Message is null;

    public static TurnFrame Parse(byte[] raw, bool stream)
    {
        if (TurnChannel.LooksLikeChannelData(raw[0]))
        {
            Assert.True(ChannelDataReader.TryRead(raw, ChannelDataLimits.Default with { AcceptRfc5766Channels = true }, out var channel, out var data, out var error), $"bad ChannelData from the server: {error}");
            if (stream)
            {
                // RFC 8656 §12.5: over TCP the message is padded to a multiple of four bytes.
                Assert.Equal(0, raw.Length % 4);
            }

            return new TurnFrame { Raw = raw, Channel = channel, Data = data.ToArray() };
        }

        var message = TurnMessage.Parse(raw);
        return new TurnFrame { Raw = raw, Message = message, Data = message.Data };
    }
}

/// <summary>A STUN message from the server, with the attributes the TURN tests look at.</summary>
internal sealed class TurnMessage
{
    private static readonly StunReaderLimits Limits = StunReaderLimits.Default with { MaxMessageSize = 65535 + StunConstants.HeaderLength };

    public required byte[] Raw { get; init; }

    public StunClass Class { get; private init; }

    public ushort Method { get; private init; }

    public StunTransactionId TransactionId { get; private init; }

    public List<ushort> Types { get; } = [];

    public int? ErrorCode { get; private set; }

    public string? Reason { get; private set; }

    public string? Realm { get; private set; }

    public byte[]? Nonce { get; private set; }

    public byte[]? PasswordAlgorithms { get; private set; }

    public ushort[]? UnknownAttributes { get; private set; }

    public IPEndPoint? XorRelayed { get; private set; }

    public IPEndPoint? XorMapped { get; private set; }

    public IPEndPoint? XorPeer { get; private set; }

    public uint? Lifetime { get; private set; }

    public byte[]? Data { get; private set; }

    public bool HasIntegritySha1 { get; private init; }

    public bool HasIntegritySha256 { get; private init; }

    public bool HasIntegrity => HasIntegritySha1 || HasIntegritySha256;

    public bool HasFingerprint { get; private init; }

    public bool FingerprintValid { get; private init; }

    public bool Has(StunAttributeType type) => Types.Contains((ushort)type);

    public static TurnMessage Parse(byte[] raw)
    {
        var status = StunMessageReader.TryParse(raw, Limits, out var message, out var error);
        Assert.True(status == OperationStatus.Done, $"the server sent a malformed STUN message ({status}, {error})");
        var header = message.Header;
        var parsed = new TurnMessage
        {
            Raw = raw,
            Class = header.Class,
            Method = header.Method,
            TransactionId = header.TransactionId,
            HasIntegritySha1 = message.HasMessageIntegrity,
            HasIntegritySha256 = message.HasMessageIntegritySha256,
            HasFingerprint = message.HasFingerprint,
            FingerprintValid = message.HasFingerprint && message.VerifyFingerprint(),
        };
        foreach (var attribute in message)
        {
            parsed.Types.Add(attribute.Type);
            var value = attribute.Value;
            switch ((StunAttributeType)attribute.Type)
            {
                case StunAttributeType.ErrorCode:
                    Assert.True(StunAttributeReader.TryReadErrorCode(value, out var code, out var reason));
                    parsed.ErrorCode = code;
                    parsed.Reason = Encoding.UTF8.GetString(reason);
                    break;
                case StunAttributeType.Realm:
                    parsed.Realm = Encoding.UTF8.GetString(value);
                    break;
                case StunAttributeType.Nonce:
                    parsed.Nonce = value.ToArray();
                    break;
                case StunAttributeType.PasswordAlgorithms:
                    parsed.PasswordAlgorithms = value.ToArray();
                    break;
                case StunAttributeType.UnknownAttributes:
                    var types = new ushort[value.Length / 2];
                    StunAttributeReader.ReadUnknownAttributes(value, types);
                    parsed.UnknownAttributes = types;
                    break;
                case StunAttributeType.XorRelayedAddress:
                    Assert.True(StunAttributeReader.TryReadXorAddress(value, header, out var relayed));
                    parsed.XorRelayed ??= relayed.ToIPEndPoint();
                    break;
                case StunAttributeType.XorMappedAddress:
                    Assert.True(StunAttributeReader.TryReadXorAddress(value, header, out var mapped));
                    parsed.XorMapped = mapped.ToIPEndPoint();
                    break;
                case StunAttributeType.XorPeerAddress:
                    Assert.True(StunAttributeReader.TryReadXorAddress(value, header, out var peer));
                    parsed.XorPeer = peer.ToIPEndPoint();
                    break;
                case StunAttributeType.Lifetime:
                    parsed.Lifetime = BinaryPrimitives.ReadUInt32BigEndian(value);
                    break;
                case StunAttributeType.Data:
                    parsed.Data = value.ToArray();
                    break;
            }
        }

        return parsed;
    }

    /// <summary>Checks whichever integrity attribute the message carries against <paramref name="key"/>.</summary>
    public bool VerifyIntegrity(byte[] key)
    {
        Assert.Equal(OperationStatus.Done, StunMessageReader.TryParse(Raw, Limits, out var message, out _));
        return message.HasMessageIntegritySha256 ? message.VerifyMessageIntegritySha256(key) : message.VerifyMessageIntegrity(key);
    }

    public override string ToString() =>
        $"{(StunMethod)Method} {Class}{(ErrorCode is { } code ? $" {code} {Reason}" : string.Empty)}";
}
