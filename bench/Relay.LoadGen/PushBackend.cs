using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// The reference for the <c>push</c> command: a back end that reaches the same devices with plain MQTT
/// instead of the push API. One MQTT 3.1.1 connection as a service account with the grant devices/#;
/// it PUBLISHes QoS 1 to devices/{id}/commands a body shaped like a command (id <c>raw-N</c>) and
/// subscribes (QoS 0) to devices/+/raw-results, where the devices answer those messages.
/// </summary>
internal sealed class PushBackend : IDisposable
{
    private readonly Socket _socket;
    private readonly IPushSink _sink;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly byte[] _sendBuffer = new byte[1024];
    private Task _readLoop = Task.CompletedTask;
    private ushort _packetId;

    private PushBackend(Socket socket, IPushSink sink)
    {
        _socket = socket;
        _sink = sink;
    }

    public static async Task<PushBackend> ConnectAsync(IPEndPoint server, string user, string password, IPushSink sink)
    {
        var socket = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await socket.ConnectAsync(server, timeout.Token);
            await socket.SendAsync(MqttWire.Connect(user, 1200, user, password), SocketFlags.None, timeout.Token);
            var connack = new byte[4];
            await socket.ReceiveExactlyAsync(connack, timeout.Token);
            if (connack[0] != 0x20 || connack[3] != 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"back end: CONNACK {connack[0]:X2} code {connack[3]}"));
            }

            await socket.SendAsync(MqttWire.Subscribe(1, "devices/+/raw-results", 0), SocketFlags.None, timeout.Token);
            var suback = new byte[5];
            await socket.ReceiveExactlyAsync(suback, timeout.Token);
            if (suback[0] != 0x90 || suback[4] != 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"back end: SUBACK {suback[0]:X2} code {suback[4]:X2} (does the account have the grant devices/#?)"));
            }

            var backend = new PushBackend(socket, sink);
            backend._readLoop = Task.Run(backend.ReadLoopAsync);
            return backend;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>PUBLISH QoS 1 to devices/{device}/commands with a command-shaped body carrying <paramref name="messageId"/>.</summary>
    public async Task PublishAsync(string device, string messageId)
    {
        var topic = Encoding.UTF8.GetBytes($"devices/{device}/commands");
        var body = Encoding.UTF8.GetBytes($"{{\"id\":\"{messageId}\",\"name\":\"bench\",\"payload\":null,\"expiresAt\":\"2099-01-01T00:00:00.000Z\"}}");
        await _sendLock.WaitAsync();
        try
        {
            _packetId = (ushort)(_packetId == ushort.MaxValue ? 1 : _packetId + 1);
            var n = MqttWire.WritePublishHeader(_sendBuffer, topic, 1, _packetId, body.Length);
            body.CopyTo(_sendBuffer, n);
            n += body.Length;
            var offset = 0;
            while (offset < n)
            {
                offset += await _socket.SendAsync(_sendBuffer.AsMemory(offset, n - offset), SocketFlags.None);
            }
        }
        finally
        {
            _sendLock.Release();
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        _ = _readLoop.Exception;
        _sendLock.Dispose();
    }

    private async Task ReadLoopAsync()
    {
        var buffer = new byte[256 * 1024];
        var filled = 0;
        try
        {
            while (true)
            {
                var n = await _socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None);
                if (n == 0)
                {
                    return;
                }

                filled += n;
                var consumed = 0;
                while (MqttWire.TryReadPacket(buffer.AsSpan(consumed, filled - consumed), out var type, out var header, out var remaining, out _))
                {
                    if (type >> 4 == 3)
                    {
                        // QoS 0 (the subscription's): topic, then the body; no packet id.
                        var body = buffer.AsSpan(consumed + header, remaining);
                        var topicLength = BinaryPrimitives.ReadUInt16BigEndian(body);
                        var skip = 2 + topicLength + (((type >> 1) & 3) > 0 ? 2 : 0);
                        var id = PushDevice.ReadId(body[skip..]);
                        if (id is not null)
                        {
                            _sink.OnRawReply(id);
                        }
                    }

                    consumed += header + remaining;
                }

                buffer.AsSpan(consumed, filled - consumed).CopyTo(buffer);
                filled -= consumed;
            }
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }
}

internal static class SocketReceiveExtensions
{
    public static async Task ReceiveExactlyAsync(this Socket socket, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var read = 0;
        while (read < buffer.Length)
        {
            var n = await socket.ReceiveAsync(buffer[read..], SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                throw new InvalidDataException("connection closed during the handshake");
            }

            read += n;
        }
    }
}
