using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.DeviceClient.Core;

/// <summary>A scripted MQTT server on a real loopback socket: the test reads the client's packets and writes any bytes.</summary>
internal sealed class FakeMqttServer : IAsyncDisposable
{
    private readonly TcpListener _listener;

    public FakeMqttServer()
    {
        Port = FreePorts.Tcp();
        _listener = new TcpListener(IPAddress.Loopback, Port);
        _listener.Start();
    }

    public int Port { get; }

    public Uri Uri => new($"mqtt://127.0.0.1:{Port}");

    public async Task<FakeMqttPeer> AcceptAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var socket = await _listener.AcceptSocketAsync(timeout.Token);
        return new FakeMqttPeer(socket);
    }

    public ValueTask DisposeAsync()
    {
        _listener.Stop();
        _listener.Dispose();
        return ValueTask.CompletedTask;
    }

    public static byte[] Build(Action<ArrayBufferWriter<byte>> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>One packet the client sent, kept whole so the codec can decode it again.</summary>
internal sealed record FakePacket(MqttPacketType Type, byte[] Raw)
{
    public MqttFrame Frame()
    {
        var sequence = new ReadOnlySequence<byte>(Raw);
        Assert.Equal(OperationStatus.Done, MqttFrameReader.TryRead(ref sequence, int.MaxValue, out var frame, out _));
        return frame;
    }
}

internal sealed class FakeMqttPeer(Socket socket) : IAsyncDisposable
{
    private readonly NetworkStream _stream = new(socket, ownsSocket: true);
    private byte[] _pending = [];

    public MqttProtocolVersion Version { get; private set; } = MqttProtocolVersion.V500;

    /// <summary>The next packet, or null when the client closed the connection.</summary>
    public async Task<FakePacket?> ReadAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var chunk = new byte[65536];
        while (true)
        {
            var sequence = new ReadOnlySequence<byte>(_pending);
            if (MqttFrameReader.TryRead(ref sequence, int.MaxValue, out var frame, out _) == OperationStatus.Done)
            {
                var length = frame.TotalLength;
                var packet = new FakePacket(frame.Type, _pending[..length]);
                _pending = _pending[length..];
                if (packet.Type == MqttPacketType.Connect)
                {
                    Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(packet.Frame(), out var connect));
                    Version = connect.Version;
                }

                return packet;
            }

            int read;
            try
            {
                read = await _stream.ReadAsync(chunk, timeout.Token);
            }
            catch (IOException)
            {
                return null;
            }

            if (read == 0)
            {
                return null;
            }

            _pending = [.. _pending, .. chunk.AsSpan(0, read)];
        }
    }

    /// <summary>Reads until a packet of <paramref name="type"/> (answering PINGREQs); fails if the client closes first.</summary>
    public async Task<FakePacket> ExpectAsync(MqttPacketType type)
    {
        while (true)
        {
            var packet = await ReadAsync();
            Assert.True(packet is not null, $"The client closed the connection while the server waited for {type}.");
            if (packet.Type == type)
            {
                return packet;
            }

            if (packet.Type == MqttPacketType.PingReq)
            {
                await SendAsync(FakeMqttServer.Build(MqttPacketWriter.WritePingResp));
            }
        }
    }

    public async Task SendAsync(byte[] bytes) => await _stream.WriteAsync(bytes);

    public Task SendConnAckAsync(bool sessionPresent = false) =>
        SendAsync(FakeMqttServer.Build(w => MqttPacketWriter.WriteConnAck(w, Version, sessionPresent, 0, default)));

    /// <summary>CONNECT, CONNACK, SUBSCRIBE, SUBACK granted QoS 1.</summary>
    public async Task AcceptSessionAsync()
    {
        await ExpectAsync(MqttPacketType.Connect);
        await SendConnAckAsync();
        var subscribe = await ExpectAsync(MqttPacketType.Subscribe);
        Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubscribe(subscribe.Frame(), Version, out var sub));
        await SendAsync(FakeMqttServer.Build(w => MqttPacketWriter.WriteSubAck(w, Version, sub.PacketId, [1])));
    }

    public Task SendCommandAsync(string topic, string json, ushort packetId, bool dup = false) =>
        SendAsync(FakeMqttServer.Build(w => MqttPacketWriter.WritePublish(w, Version, System.Text.Encoding.UTF8.GetBytes(topic), 1, false, dup, packetId, default(MqttPublishProperties), System.Text.Encoding.UTF8.GetBytes(json).AsSpan())));

    /// <summary>Reads the next PUBLISH to <paramref name="topic"/>, acknowledges it, and returns its payload as text.</summary>
    public async Task<string> ExpectPublishAsync(string topic)
    {
        while (true)
        {
            var packet = await ExpectAsync(MqttPacketType.Publish);
            Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(packet.Frame(), Version, out var publish));
            if (publish.QoS == 1)
            {
                var id = publish.PacketId;
                await SendAsync(FakeMqttServer.Build(w => MqttPacketWriter.WriteAck(w, MqttPacketType.PubAck, Version, id, MqttReasonCode.Success)));
            }

            if (System.Text.Encoding.UTF8.GetString(publish.Topic.ToArray()) == topic)
            {
                return System.Text.Encoding.UTF8.GetString(publish.Payload.ToArray());
            }
        }
    }

    public ValueTask DisposeAsync() => _stream.DisposeAsync();
}
