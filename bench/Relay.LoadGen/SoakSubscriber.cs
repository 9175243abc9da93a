using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Relay.LoadGen;

/// <summary>
/// The soak's telemetry back end: one MQTT 3.1.1 connection as a service account (grant devices/#) with a
/// persistent session, subscribed at QoS 1 to devices/+/telemetry. Every message is PUBACKed and entered in
/// the ledger by device and sequence number. Should the connection end, it reconnects to the same session,
/// which holds what arrived meanwhile (counted, since it should not happen on loopback).
/// </summary>
internal sealed class SoakSubscriber(SoakOptions o, SoakLedger ledger)
{
    private const ushort KeepAliveSeconds = 120;
    private const long MaxSeq = 1 << 24;

    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private long _received;

    /// <summary>Telemetry PUBLISHes received (duplicates included).</summary>
    public long Received => Interlocked.Read(ref _received);

    /// <summary>Connects once (so the subscription exists before any device publishes), then keeps the session read until stop.</summary>
    public async Task<Task> StartAsync(CancellationToken stop)
    {
        var socket = await ConnectAsync(stop);
        return Task.Run(() => RunAsync(socket, stop), CancellationToken.None);
    }

    private async Task RunAsync(Socket socket, CancellationToken stop)
    {
        while (true)
        {
            using (socket)
            {
                await ReadAsync(socket, stop);
            }

            if (stop.IsCancellationRequested)
            {
                return;
            }

            Interlocked.Increment(ref ledger.SubscriberReconnects);
            while (true)
            {
                try
                {
                    socket = await ConnectAsync(stop);
                    break;
                }
                catch (Exception e) when (e is SocketException or IOException or InvalidDataException)
                {
                    Console.Error.WriteLine("soak: the telemetry subscriber could not reconnect: " + e.Message);
                    await Task.Delay(1000, CancellationToken.None);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task<Socket> ConnectAsync(CancellationToken stop)
    {
        var socket = new Socket(o.Mqtt.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
            timeout.CancelAfter(TimeSpan.FromSeconds(30));
            await socket.ConnectAsync(o.Mqtt, timeout.Token);
            await socket.SendAsync(MqttWire.Connect(o.BackendUser, KeepAliveSeconds, o.BackendUser, o.BackendPassword, cleanSession: false), SocketFlags.None, timeout.Token);
            var connack = new byte[4];
            await socket.ReceiveExactlyAsync(connack, timeout.Token);
            if (connack[0] != 0x20 || connack[3] != 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"telemetry subscriber: CONNACK code {connack[3]}"));
            }

            // Always SUBSCRIBE: a no-op on a resumed session that still has it, and the SUBACK proves the grant.
            // Anything queued for a resumed session may come before the SUBACK; the read loop takes both.
            await socket.SendAsync(MqttWire.Subscribe(1, "devices/+/telemetry", 1), SocketFlags.None, timeout.Token);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private async Task ReadAsync(Socket socket, CancellationToken stop)
    {
        var buffer = new byte[256 * 1024];
        var acks = new byte[64 * 1024];
        var filled = 0;
        using var registration = stop.Register(socket.Dispose);
        using var ended = new CancellationTokenSource();
        var pinger = PingAsync(socket, ended.Token);
        try
        {
            while (true)
            {
                var n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None);
                if (n == 0)
                {
                    return;
                }

                filled += n;
                var consumed = 0;
                var ackBytes = 0;
                while (MqttWire.TryReadPacket(buffer.AsSpan(consumed, filled - consumed), out var type, out var header, out var remaining, out var malformed))
                {
                    var body = buffer.AsSpan(consumed + header, remaining);
                    consumed += header + remaining;
                    if (type >> 4 == 9 && remaining >= 3 && body[2] != 1)
                    {
                        throw new InvalidDataException($"telemetry subscriber: SUBACK {body[2]:X2} (does {o.BackendUser} have the grant devices/#?)");
                    }

                    if (type >> 4 != 3)
                    {
                        continue;
                    }

                    var qos = (type >> 1) & 3;
                    var topicLength = BinaryPrimitives.ReadUInt16BigEndian(body);
                    var offset = 2 + topicLength;
                    if (qos > 0)
                    {
                        // §3.4: PUBACK, the PUBLISH's packet id.
                        acks[ackBytes++] = 0x40;
                        acks[ackBytes++] = 0x02;
                        acks[ackBytes++] = body[offset];
                        acks[ackBytes++] = body[offset + 1];
                        offset += 2;
                    }

                    Interlocked.Increment(ref _received);
                    var device = DeviceIndex(body.Slice(2, topicLength));
                    var seq = body.Length - offset >= 8 ? BinaryPrimitives.ReadInt64BigEndian(body[offset..]) : -1;
                    if (device < 0 || device >= o.Devices || seq is < 1 or > MaxSeq)
                    {
                        Interlocked.Increment(ref ledger.TelemetryForeign);
                    }
                    else if (o.SelfCheck > 0 && Interlocked.Read(ref _received) % o.SelfCheck == 0)
                    {
                        Interlocked.Increment(ref ledger.SelfCheckTelemetry);
                    }
                    else
                    {
                        ledger.TelemetryReceived(device, seq);
                    }

                    if (ackBytes > acks.Length - 8)
                    {
                        await SendAsync(socket, acks.AsMemory(0, ackBytes));
                        ackBytes = 0;
                    }
                }

                if (ackBytes > 0)
                {
                    await SendAsync(socket, acks.AsMemory(0, ackBytes));
                }

                buffer.AsSpan(consumed, filled - consumed).CopyTo(buffer);
                filled -= consumed;
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            await ended.CancelAsync();
            await pinger;
        }
    }

    /// <summary>§3.12 PINGREQ every third of the keep-alive: the drain has no telemetry, and a quiet session must not end.</summary>
    private async Task PingAsync(Socket socket, CancellationToken ended)
    {
        byte[] ping = [0xC0, 0x00];
        try
        {
            while (true)
            {
                await Task.Delay(TimeSpan.FromSeconds(KeepAliveSeconds / 3), ended);
                await SendAsync(socket, ping);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task SendAsync(Socket socket, ReadOnlyMemory<byte> bytes)
    {
        await _sendLock.WaitAsync();
        try
        {
            while (bytes.Length > 0)
            {
                bytes = bytes[await socket.SendAsync(bytes, SocketFlags.None)..];
            }
        }
        finally
        {
            _sendLock.Release();
        }
    }

    /// <summary>"devices/{prefix}{index}/telemetry" → index; -1 for anything else.</summary>
    private int DeviceIndex(ReadOnlySpan<byte> topic)
    {
        var text = System.Text.Encoding.UTF8.GetString(topic);
        const string Head = "devices/";
        const string Tail = "/telemetry";
        if (!text.StartsWith(Head + o.IdPrefix, StringComparison.Ordinal) || !text.EndsWith(Tail, StringComparison.Ordinal))
        {
            return -1;
        }

        var digits = text.AsSpan(Head.Length + o.IdPrefix.Length, text.Length - Head.Length - o.IdPrefix.Length - Tail.Length);
        return int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var index) ? index : -1;
    }
}
