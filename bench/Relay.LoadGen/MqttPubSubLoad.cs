using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Relay.LoadGen;

/// <summary>
/// <c>mqtt-pubsub</c>: publisher i → topic bench/i → subscriber i, MQTT 3.1.1, QoS 0 or 1. Each payload
/// starts with the Stopwatch timestamp of its send, so the subscriber measures publish-to-delivery
/// latency on the same clock.
/// </summary>
internal static class MqttPubSubLoad
{
    public static async Task<int> RunAsync(MqttLoadOptions o)
    {
        var pairs = new List<Pair>();
        try
        {
            for (var i = 0; i < o.Publishers; i++)
            {
                pairs.Add(await Pair.OpenAsync(o, i));
            }

            // Closed loop: --window messages per pair in flight between publish and delivery.
            using var closed = new CancellationTokenSource();
            var publishing = pairs.Select(p => p.ClosedLoopAsync(closed.Token)).ToArray();
            await Task.Delay(TimeSpan.FromSeconds(o.WarmupSeconds));
            var cpu = new CpuWindow(o.ServerPid);
            var before = pairs.Sum(static p => Volatile.Read(ref p.Delivered));
            var start = Stopwatch.GetTimestamp();
            cpu.Begin();
            await Task.Delay(TimeSpan.FromSeconds(o.DurationSeconds));
            var delivered = pairs.Sum(static p => Volatile.Read(ref p.Delivered)) - before;
            var seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            cpu.End();
            await closed.CancelAsync();
            await Task.WhenAll(publishing);
            await DrainAsync(pairs);

            // Open loop: a fixed total rate, latency recorded at the subscribers.
            foreach (var pair in pairs)
            {
                pair.Recording = true;
            }

            var sentBefore = pairs.Sum(static p => p.Sent);
            var deliveredBefore = pairs.Sum(static p => Volatile.Read(ref p.Delivered));
            var latencyCpu = new CpuWindow(o.ServerPid);
            latencyCpu.Begin();
            await Task.WhenAll(pairs.Select(p => p.OpenLoopAsync(o.Rate / o.Publishers, o.LatencySeconds)));
            latencyCpu.End();
            var drained = await DrainAsync(pairs);
            var sent = pairs.Sum(static p => p.Sent) - sentBefore;
            var received = pairs.Sum(static p => Volatile.Read(ref p.Delivered)) - deliveredBefore;
            var histogram = new LatencyHistogram();
            foreach (var pair in pairs)
            {
                histogram.Add(pair.Latency);
            }

            var label = o.Label.Length > 0 ? " label=" + o.Label : "";
            Console.WriteLine(FormattableString.Invariant(
                $"RESULT mode=mqtt-pubsub target={o.Target}{label} qos={o.Qos} publishers={o.Publishers} payload={o.Payload} window={o.Window} msgs_per_s={delivered / seconds:F0} server_cpu={cpu.ServerCores:F2} gen_cpu={cpu.GeneratorCores:F2} busy={cpu.Busy} rate={o.Rate:F0} lat_sent={sent} lat_received={received} lat_lost={sent - received} lat_p50_us={histogram.Percentile(0.50)} lat_p99_us={histogram.Percentile(0.99)} lat_server_cpu={latencyCpu.ServerCores:F2} drained={(drained ? 1 : 0)}"));
            return 0;
        }
        catch (Exception e) when (e is SocketException or IOException or InvalidDataException)
        {
            Console.Error.WriteLine("mqtt-pubsub: " + e.Message);
            return 1;
        }
        finally
        {
            foreach (var pair in pairs)
            {
                pair.Dispose();
            }
        }
    }

    /// <summary>Waits (bounded) until every message sent has been delivered.</summary>
    private static async Task<bool> DrainAsync(List<Pair> pairs)
    {
        var deadline = Stopwatch.GetTimestamp() + (5 * Stopwatch.Frequency);
        while (pairs.Any(static p => Volatile.Read(ref p.Delivered) < p.Sent))
        {
            if (Stopwatch.GetTimestamp() > deadline)
            {
                return false;
            }

            await Task.Delay(10);
        }

        return true;
    }

    private sealed class Pair : IDisposable
    {
        private readonly MqttLoadOptions _o;
        private readonly Socket _publisher;
        private readonly Socket _subscriber;
        private readonly byte[] _topic;
        private readonly SemaphoreSlim _window;
        private readonly byte[] _sendBuffer = new byte[64 * 1024];
        private readonly Task _subscriberLoop;
        private readonly Task _publisherDrain;
        private int _buffered;
        private ushort _packetId;

        public long Delivered;
        public long Sent;

        private Pair(MqttLoadOptions o, Socket publisher, Socket subscriber, byte[] topic)
        {
            _o = o;
            _publisher = publisher;
            _subscriber = subscriber;
            _topic = topic;
            _window = new SemaphoreSlim(o.Window, o.Window);
            _subscriberLoop = Task.Run(SubscriberLoopAsync);
            _publisherDrain = Task.Run(PublisherDrainAsync);
        }

        public volatile bool Recording;

        public LatencyHistogram Latency { get; } = new();

        public static async Task<Pair> OpenAsync(MqttLoadOptions o, int index)
        {
            var topic = FormattableString.Invariant($"bench/{index}");
            var subscriber = await ConnectAsync(o, FormattableString.Invariant($"bench-sub-{index}"));
            await subscriber.SendAsync(MqttWire.Subscribe(1, topic, o.Qos), SocketFlags.None);
            var suback = await ReadExactlyAsync(subscriber, 5);
            // §3.9: 0x90, length 3, packet id, granted QoS (0x80 = failure).
            if (suback[0] != 0x90 || suback[4] != o.Qos)
            {
                throw new InvalidDataException(FormattableString.Invariant($"SUBACK {suback[0]:X2} code {suback[4]:X2}"));
            }

            var publisher = await ConnectAsync(o, FormattableString.Invariant($"bench-pub-{index}"));
            return new Pair(o, publisher, subscriber, Encoding.UTF8.GetBytes(topic));
        }

        public async Task ClosedLoopAsync(CancellationToken stop)
        {
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    if (!_window.Wait(0))
                    {
                        await FlushAsync();
                        await _window.WaitAsync(stop);
                    }

                    await AppendPublishAsync();
                }
            }
            catch (OperationCanceledException)
            {
            }

            await FlushAsync();
        }

        public async Task OpenLoopAsync(double rate, double seconds)
        {
            var start = Stopwatch.GetTimestamp();
            long sent = 0;
            while (true)
            {
                var elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
                if (elapsed >= seconds)
                {
                    break;
                }

                var due = (long)(elapsed * rate);
                for (; sent < due; sent++)
                {
                    await AppendPublishAsync();
                }

                await FlushAsync();
                await Task.Delay(1);
            }
        }

        public void Dispose()
        {
            _publisher.Dispose();
            _subscriber.Dispose();
            _ = _subscriberLoop.Exception;
            _ = _publisherDrain.Exception;
            _window.Dispose();
        }

        private async Task AppendPublishAsync()
        {
            if (_buffered + 16 + _topic.Length + _o.Payload > _sendBuffer.Length)
            {
                await FlushAsync();
            }

            _packetId = (ushort)(_packetId == ushort.MaxValue ? 1 : _packetId + 1);
            var span = _sendBuffer.AsSpan(_buffered);
            var n = MqttWire.WritePublishHeader(span, _topic, _o.Qos, _packetId, _o.Payload);
            span.Slice(n, _o.Payload).Clear();
            BinaryPrimitives.WriteInt64LittleEndian(span[n..], Stopwatch.GetTimestamp());
            _buffered += n + _o.Payload;
            Sent++;
        }

        private async Task FlushAsync()
        {
            var offset = 0;
            while (offset < _buffered)
            {
                offset += await _publisher.SendAsync(_sendBuffer.AsMemory(offset, _buffered - offset), SocketFlags.None);
            }

            _buffered = 0;
        }

        /// <summary>PUBACKs to the publisher are read and dropped, so the broker never blocks writing them.</summary>
        private async Task PublisherDrainAsync()
        {
            var buffer = new byte[16 * 1024];
            try
            {
                while (await _publisher.ReceiveAsync(buffer, SocketFlags.None) > 0)
                {
                }
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }

        private async Task SubscriberLoopAsync()
        {
            var buffer = new byte[256 * 1024];
            var acks = new byte[64 * 1024];
            var filled = 0;
            try
            {
                while (true)
                {
                    var n = await _subscriber.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None);
                    if (n == 0)
                    {
                        return;
                    }

                    filled += n;
                    var consumed = 0;
                    var ackBytes = 0;
                    while (MqttWire.TryReadPacket(buffer.AsSpan(consumed, filled - consumed), out var type, out var header, out var remaining, out var malformed))
                    {
                        if (type >> 4 == 3)
                        {
                            OnPublish(buffer.AsSpan(consumed + header, remaining), (type >> 1) & 3, acks, ref ackBytes);
                        }

                        consumed += header + remaining;
                        if (ackBytes > acks.Length - 8)
                        {
                            await _subscriber.SendAsync(acks.AsMemory(0, ackBytes), SocketFlags.None);
                            ackBytes = 0;
                        }
                    }

                    if (ackBytes > 0)
                    {
                        await _subscriber.SendAsync(acks.AsMemory(0, ackBytes), SocketFlags.None);
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

        private void OnPublish(ReadOnlySpan<byte> body, int qos, byte[] acks, ref int ackBytes)
        {
            var topicLength = BinaryPrimitives.ReadUInt16BigEndian(body);
            var offset = 2 + topicLength;
            if (qos > 0)
            {
                // §3.4: PUBACK 0x40, length 2, the PUBLISH's packet id.
                acks[ackBytes++] = 0x40;
                acks[ackBytes++] = 0x02;
                acks[ackBytes++] = body[offset];
                acks[ackBytes++] = body[offset + 1];
                offset += 2;
            }

            if (Recording && body.Length >= offset + 8)
            {
                var sentAt = BinaryPrimitives.ReadInt64LittleEndian(body[offset..]);
                Latency.Record((Stopwatch.GetTimestamp() - sentAt) * 1_000_000 / Stopwatch.Frequency);
            }

            Interlocked.Increment(ref Delivered);
            if (!Recording)
            {
                _window.Release();
            }
        }

        private static async Task<Socket> ConnectAsync(MqttLoadOptions o, string clientId)
        {
            var socket = new Socket(o.Target.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(o.Target);
            await socket.SendAsync(MqttWire.Connect(clientId, 600, o.Username, o.Password), SocketFlags.None);
            var connack = await ReadExactlyAsync(socket, 4);
            if (connack[0] != 0x20 || connack[3] != 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"{clientId}: CONNACK {connack[0]:X2} code {connack[3]}"));
            }

            return socket;
        }

        private static async Task<byte[]> ReadExactlyAsync(Socket socket, int count)
        {
            var buffer = new byte[count];
            var read = 0;
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            while (read < count)
            {
                var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    throw new InvalidDataException("connection closed during the handshake");
                }

                read += n;
            }

            return buffer;
        }
    }
}
