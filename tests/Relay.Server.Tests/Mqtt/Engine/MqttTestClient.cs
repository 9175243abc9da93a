using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

/// <summary>One packet as received; owns its bytes, so the codec's views into it stay valid.</summary>
internal sealed class ReceivedPacket(byte[] bytes, MqttProtocolVersion version)
{
    public byte[] Bytes { get; } = bytes;

    public MqttPacketType Type => (MqttPacketType)(Bytes[0] >> 4);

    public MqttFrame Frame
    {
        get
        {
            var sequence = new ReadOnlySequence<byte>(Bytes);
            Assert.Equal(OperationStatus.Done, MqttFrameReader.TryRead(ref sequence, int.MaxValue, out var frame, out _));
            return frame;
        }
    }

    public MqttConnAck ConnAck()
    {
        Assert.Equal(MqttPacketType.ConnAck, Type);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnAck(Frame, version, out var packet));
        return packet;
    }

    public MqttPublish Publish()
    {
        Assert.Equal(MqttPacketType.Publish, Type);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(Frame, version, out var packet));
        return packet;
    }

    public string Topic => Encoding.UTF8.GetString(Publish().Topic);

    public string PayloadText => Encoding.UTF8.GetString(Publish().Payload);

    public MqttAck Ack()
    {
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(Frame, version, out var packet));
        return packet;
    }

    public byte[] SubAckCodes()
    {
        Assert.Equal(MqttPacketType.SubAck, Type);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubAck(Frame, version, out var packet));
        return packet.ReasonCodes.ToArray();
    }

    public byte[] UnsubAckCodes()
    {
        Assert.Equal(MqttPacketType.UnsubAck, Type);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadUnsubAck(Frame, version, out var packet));
        return packet.ReasonCodes.ToArray();
    }

    public MqttDisconnect Disconnect()
    {
        Assert.Equal(MqttPacketType.Disconnect, Type);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadDisconnect(Frame, version, out var packet));
        return packet;
    }

    public override string ToString() => $"{Type} ({Bytes.Length} B)";
}

/// <summary>
/// A deliberately small raw MQTT client over a real loopback socket, built from the codec's client-side
/// writers and readers, so tests can send exactly the packets a spec statement talks about (including
/// broken ones) and see exactly what the server answers.
/// </summary>
internal sealed class MqttTestClient : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    private readonly Socket _socket;
    private readonly Stream _stream;
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;
    private ushort _nextPacketId;

    private MqttTestClient(Socket socket, Stream stream, MqttProtocolVersion version)
    {
        _socket = socket;
        _stream = stream;
        Version = version;
    }

    public MqttProtocolVersion Version { get; set; }

    /// <summary>Bytes received and not yet read as packets, buffered here or in the socket.</summary>
    public int BytesAvailable => (_end - _start) + _socket.Available;

    /// <summary>
    /// Connects over loopback; <paramref name="receiveBufferSize"/> pins SO_RCVBUF (a client that reads nothing then
    /// stops absorbing output early); <paramref name="local"/> binds the source address (127.0.0.2+, so per-IP
    /// limits hit an attacker and not the well-behaved clients on 127.0.0.1).
    /// </summary>
    public static async Task<MqttTestClient> OpenAsync(int port, MqttProtocolVersion version = MqttProtocolVersion.V500, int? receiveBufferSize = null, IPAddress? local = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (receiveBufferSize is { } size)
        {
            socket.ReceiveBufferSize = size;
        }

        if (local is not null)
        {
            socket.Bind(new IPEndPoint(local, 0));
        }

        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return new MqttTestClient(socket, new NetworkStream(socket, ownsSocket: false), version);
    }

    /// <summary>MQTT over TLS (MQTT 5.0 §4.2), optionally presenting a client certificate; the server's certificate is not checked.</summary>
    public static async Task<MqttTestClient> OpenTlsAsync(int port, System.Security.Cryptography.X509Certificates.X509Certificate2? clientCertificate, MqttProtocolVersion version = MqttProtocolVersion.V500, IPAddress? local = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (local is not null)
        {
            socket.Bind(new IPEndPoint(local, 0));
        }

        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        var tls = new System.Net.Security.SslStream(new NetworkStream(socket, ownsSocket: false), leaveInnerStreamOpen: false, static (_, _, _, _) => true);
        await tls.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ClientCertificates = clientCertificate is null ? null : [clientCertificate],
            LocalCertificateSelectionCallback = clientCertificate is null ? null : (_, _, _, _, _) => clientCertificate,
        });
        return new MqttTestClient(socket, tls, version);
    }

    /// <summary>Opens, sends CONNECT and returns the CONNACK (asserting success unless told otherwise).</summary>
    public static async Task<(MqttTestClient Client, ReceivedPacket ConnAck)> ConnectAsync(int port, string clientId, MqttProtocolVersion version = MqttProtocolVersion.V500, Action<MqttConnectOptionsBuilder>? configure = null, bool expectSuccess = true) =>
        await ConnectAsync(await OpenAsync(port, version), clientId, version, configure, expectSuccess);

    public static async Task<(MqttTestClient Client, ReceivedPacket ConnAck)> ConnectAsync(MqttTestClient client, string clientId, MqttProtocolVersion version = MqttProtocolVersion.V500, Action<MqttConnectOptionsBuilder>? configure = null, bool expectSuccess = true)
    {
        var options = new MqttConnectOptionsBuilder { Options = new MqttConnectOptions { Version = version, ClientId = clientId, CleanStart = true, KeepAliveSeconds = 60 } };
        configure?.Invoke(options);
        var connect = options.Options;
        await client.SendAsync(w => MqttPacketWriter.WriteConnect(w, connect));
        var connAck = await client.ReceiveAsync();
        if (expectSuccess)
        {
            Assert.Equal(MqttPacketType.ConnAck, connAck.Type);
            Assert.Equal(0, connAck.ConnAck().ReasonCode);
        }

        return (client, connAck);
    }

    public ushort NextPacketId() => _nextPacketId = (ushort)(_nextPacketId == ushort.MaxValue ? 1 : _nextPacketId + 1);

    public async Task SendAsync(Action<ArrayBufferWriter<byte>> write)
    {
        var writer = new ArrayBufferWriter<byte>();
        write(writer);
        await SendRawAsync(writer.WrittenMemory);
    }

    public async Task SendRawAsync(ReadOnlyMemory<byte> bytes)
    {
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    public Task SubscribeAsync(string filter, byte qos = 1, uint subscriptionId = 0, bool noLocal = false, bool retainAsPublished = false, byte retainHandling = 0, ushort? packetId = null)
    {
        var entries = new[] { new MqttSubscriptionRequest(filter, qos) { NoLocal = noLocal, RetainAsPublished = retainAsPublished, RetainHandling = retainHandling } };
        var id = packetId ?? NextPacketId();
        return SendAsync(w => MqttPacketWriter.WriteSubscribe(w, Version, id, entries, subscriptionId));
    }

    /// <summary>SUBSCRIBE and wait for its SUBACK; returns the granted codes.</summary>
    public async Task<byte[]> SubscribeAndWaitAsync(string filter, byte qos = 1, uint subscriptionId = 0, bool noLocal = false, bool retainAsPublished = false, byte retainHandling = 0)
    {
        await SubscribeAsync(filter, qos, subscriptionId, noLocal, retainAsPublished, retainHandling);
        return (await ReceiveAsync(MqttPacketType.SubAck)).SubAckCodes();
    }

    public Task PublishAsync(string topic, string payload, byte qos = 0, bool retain = false, ushort packetId = 0, MqttPublishProperties properties = default, bool dup = false) =>
        PublishAsync(Encoding.UTF8.GetBytes(topic), Encoding.UTF8.GetBytes(payload), qos, retain, packetId, properties, dup);

    public Task PublishAsync(byte[] topic, byte[] payload, byte qos = 0, bool retain = false, ushort packetId = 0, MqttPublishProperties properties = default, bool dup = false)
    {
        if (qos > 0 && packetId == 0)
        {
            packetId = NextPacketId();
        }

        return SendAsync(w => MqttPacketWriter.WritePublish(w, Version, topic, qos, retain, dup, packetId, properties, payload.AsSpan()));
    }

    public Task AckAsync(MqttPacketType type, ushort packetId, MqttReasonCode code = MqttReasonCode.Success) =>
        SendAsync(w => MqttPacketWriter.WriteAck(w, type, Version, packetId, code));

    public Task PingAsync() => SendAsync(MqttPacketWriter.WritePingReq);

    public Task DisconnectAsync(MqttReasonCode code = MqttReasonCode.Success) =>
        SendAsync(w => MqttPacketWriter.WriteDisconnect(w, Version, code));

    /// <summary>The next packet; fails the test if none arrives in a generous bound or the server closes.</summary>
    public async Task<ReceivedPacket> ReceiveAsync()
    {
        var packet = await TryReceiveAsync();
        Assert.True(packet is not null, "the server closed the connection instead of sending a packet");
        return packet;
    }

    /// <summary>Skips packets until one of <paramref name="type"/> arrives.</summary>
    public async Task<ReceivedPacket> ReceiveAsync(MqttPacketType type)
    {
        while (true)
        {
            var packet = await ReceiveAsync();
            if (packet.Type == type)
            {
                return packet;
            }
        }
    }

    /// <summary>Sends PINGREQ and returns every packet received before PINGRESP: a barrier instead of a sleep.</summary>
    public async Task<List<ReceivedPacket>> DrainUntilPingAsync()
    {
        await PingAsync();
        var packets = new List<ReceivedPacket>();
        while (true)
        {
            var packet = await ReceiveAsync();
            if (packet.Type == MqttPacketType.PingResp)
            {
                return packets;
            }

            packets.Add(packet);
        }
    }

    /// <summary>The next packet, or null when the server closed the connection.</summary>
    public async Task<ReceivedPacket?> TryReceiveAsync()
    {
        using var timeout = new CancellationTokenSource(Timeout);
        while (true)
        {
            var sequence = new ReadOnlySequence<byte>(_buffer, _start, _end - _start);
            var status = MqttFrameReader.TryRead(ref sequence, int.MaxValue, out var frame, out var error);
            if (status == OperationStatus.Done)
            {
                var bytes = _buffer.AsSpan(_start, frame.TotalLength).ToArray();
                _start += frame.TotalLength;
                return new ReceivedPacket(bytes, Version);
            }

            Assert.True(status == OperationStatus.NeedMoreData, $"the server sent an invalid frame ({error})");
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            if (_end == _buffer.Length)
            {
                Array.Resize(ref _buffer, _buffer.Length * 2);
            }

            int read;
            try
            {
                read = await _stream.ReadAsync(_buffer.AsMemory(_end), timeout.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail("no packet from the server within 15 s");
                throw;
            }
            catch (IOException)
            {
                return null;
            }

            if (read == 0)
            {
                return null;
            }

            _end += read;
        }
    }

    /// <summary>Reads until the server closes; returns what arrived before the close.</summary>
    public async Task<List<ReceivedPacket>> ReadUntilClosedAsync()
    {
        var packets = new List<ReceivedPacket>();
        while (await TryReceiveAsync() is { } packet)
        {
            packets.Add(packet);
        }

        return packets;
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _socket.Dispose();
    }
}

/// <summary>Mutable holder so a test can adjust the CONNECT struct in a lambda.</summary>
internal sealed class MqttConnectOptionsBuilder
{
    public MqttConnectOptions Options;
}
