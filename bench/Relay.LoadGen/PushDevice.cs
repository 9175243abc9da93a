using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Relay.LoadGen;

/// <summary>What the devices and the back-end client report to the run.</summary>
internal interface IPushSink
{
    /// <summary>A command PUBLISH reached a device (Stopwatch timestamp of the receive that held it).</summary>
    void OnCommand(string commandId, long receivedAt);

    /// <summary>The server PUBACKed a device's result for <paramref name="commandId"/>.</summary>
    void OnResultAcked(string commandId);

    /// <summary>The back end received a device's reply to a plain MQTT message.</summary>
    void OnRawReply(string messageId);
}

/// <summary>
/// One simulated device for the <c>push</c> command: MQTT 3.1.1 with client id = user name = device id,
/// SUBSCRIBE devices/{id}/commands at QoS 1. Per command PUBLISH (docs/push.md) it records the receive
/// time, then sends in one write the PUBACK (§3.4, marks the command delivered) and its result as a QoS 1
/// PUBLISH to devices/{id}/results. A message whose id starts with <c>raw-</c> came from the reference
/// back end rather than the push API: it is answered on devices/{id}/raw-results instead, so the server's
/// command service never sees it. Only the read loop writes to the socket after the handshake.
/// </summary>
internal sealed class PushDevice : IDisposable
{
    public const string RawPrefix = "raw-";

    private readonly Socket _socket;
    private readonly IPushSink _sink;
    private readonly byte[] _resultsTopic;
    private readonly byte[] _rawTopic;
    private readonly Dictionary<ushort, string> _pendingResults = [];
    private readonly TaskCompletionSource<byte> _suback = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private byte[] _buffer = new byte[1024];
    private ushort _packetId = 1;
    private Task _readLoop = Task.CompletedTask;

    private PushDevice(string id, Socket socket, IPushSink sink)
    {
        Id = id;
        _socket = socket;
        _sink = sink;
        _resultsTopic = Encoding.UTF8.GetBytes($"devices/{id}/results");
        _rawTopic = Encoding.UTF8.GetBytes($"devices/{id}/raw-results");
    }

    public string Id { get; }

    public bool Closed { get; private set; }

    /// <summary>Completes when the server ends the connection (or it is disposed).</summary>
    public Task Ended => _readLoop;

    public static async Task<PushDevice> ConnectAsync(IPEndPoint server, IPAddress source, string id, string secret, IPushSink sink)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await socket.ConnectAsync(server, timeout.Token);
            await socket.SendAsync(MqttWire.Connect(id, 1200, id, secret), SocketFlags.None, timeout.Token);
            var connack = new byte[4];
            await socket.ReceiveExactlyAsync(connack, timeout.Token);
            // §3.2: 0x20, remaining length 2, flags, return code 0 = accepted.
            if (connack[0] != 0x20 || connack[3] != 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"{id}: CONNACK {connack[0]:X2} code {connack[3]}"));
            }

            var device = new PushDevice(id, socket, sink);
            device._readLoop = Task.Run(device.ReadLoopAsync);
            await socket.SendAsync(MqttWire.Subscribe(1, $"devices/{id}/commands", 1), SocketFlags.None, timeout.Token);
            var granted = await device._suback.Task.WaitAsync(timeout.Token);
            if (granted != 1)
            {
                device.Dispose();
                throw new InvalidDataException(FormattableString.Invariant($"{id}: SUBACK granted {granted:X2}"));
            }

            return device;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Closed = true;
        _socket.Dispose();
        _ = _readLoop.Exception;
    }

    private async Task ReadLoopAsync()
    {
        var filled = 0;
        try
        {
            while (true)
            {
                if (filled == _buffer.Length)
                {
                    Array.Resize(ref _buffer, _buffer.Length * 2);
                }

                var n = await _socket.ReceiveAsync(_buffer.AsMemory(filled), SocketFlags.None);
                var receivedAt = Stopwatch.GetTimestamp();
                if (n == 0)
                {
                    break;
                }

                filled += n;
                var consumed = 0;
                var output = ArrayPool<byte>.Shared.Rent(4096);
                var outputLength = 0;
                try
                {
                    while (MqttWire.TryReadPacket(_buffer.AsSpan(consumed, filled - consumed), out var type, out var header, out var remaining, out var malformed))
                    {
                        var body = _buffer.AsSpan(consumed + header, remaining);
                        switch (type >> 4)
                        {
                            case 3:
                                if (outputLength > output.Length - 1024)
                                {
                                    await _socket.SendAsync(output.AsMemory(0, outputLength), SocketFlags.None);
                                    outputLength = 0;
                                }

                                outputLength += OnPublish(_buffer.AsSpan(consumed + header, remaining), (type >> 1) & 3, receivedAt, output.AsSpan(outputLength));
                                break;
                            case 4 when remaining >= 2:
                                // PUBACK of one of our results.
                                if (_pendingResults.Remove(BinaryPrimitives.ReadUInt16BigEndian(body), out var commandId) && !commandId.StartsWith(RawPrefix, StringComparison.Ordinal))
                                {
                                    _sink.OnResultAcked(commandId);
                                }

                                break;
                            case 9 when remaining >= 3:
                                _suback.TrySetResult(body[2]);
                                break;
                            default:
                                break;
                        }

                        consumed += header + remaining;
                    }

                    if (outputLength > 0)
                    {
                        await _socket.SendAsync(output.AsMemory(0, outputLength), SocketFlags.None);
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(output);
                }

                _buffer.AsSpan(consumed, filled - consumed).CopyTo(_buffer);
                filled -= consumed;
            }
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            Closed = true;
            _suback.TrySetResult(0x80);
        }
    }

    /// <summary>Handles one PUBLISH; writes the PUBACK and the result into <paramref name="output"/>, returns their length.</summary>
    private int OnPublish(ReadOnlySpan<byte> body, int qos, long receivedAt, Span<byte> output)
    {
        var topicLength = BinaryPrimitives.ReadUInt16BigEndian(body);
        var offset = 2 + topicLength;
        var n = 0;
        if (qos > 0)
        {
            // §3.4: PUBACK 0x40, length 2, the PUBLISH's packet id.
            output[n++] = 0x40;
            output[n++] = 0x02;
            output[n++] = body[offset];
            output[n++] = body[offset + 1];
            offset += 2;
        }

        var commandId = ReadId(body[offset..]);
        if (commandId is null)
        {
            return n;
        }

        _sink.OnCommand(commandId, receivedAt);
        var raw = commandId.StartsWith(RawPrefix, StringComparison.Ordinal);
        Span<byte> result = stackalloc byte[256];
        var resultLength = Encoding.UTF8.GetBytes($"{{\"id\":\"{commandId}\",\"status\":\"succeeded\",\"payload\":null}}", result);
        _packetId = (ushort)(_packetId == ushort.MaxValue ? 1 : _packetId + 1);
        _pendingResults[_packetId] = commandId;
        var topic = raw ? _rawTopic : _resultsTopic;
        n += MqttWire.WritePublishHeader(output[n..], topic, 1, _packetId, resultLength);
        result[..resultLength].CopyTo(output[n..]);
        return n + resultLength;
    }

    /// <summary>The string value of the top-level "id" property of a JSON body; null when there is none.</summary>
    public static string? ReadId(ReadOnlySpan<byte> json)
    {
        try
        {
            var reader = new Utf8JsonReader(json);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var isId = reader.ValueTextEquals("id"u8);
                if (!reader.Read())
                {
                    return null;
                }

                if (isId && reader.TokenType == JsonTokenType.String)
                {
                    return reader.GetString();
                }

                reader.Skip();
            }
        }
        catch (JsonException)
        {
        }

        return null;
    }
}
