using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Relay.Server.Mqtt.Transport;
using Relay.Server.Tests.Mqtt.Engine;

namespace Relay.Server.Tests.Mqtt.Transport;

/// <summary>The MQTT socket transport over real loopback TCP connections.</summary>
public sealed class SocketDuplexPipeTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task BytesArrivingInPieces_AreReadTogetherUntilConsumed_AndAnIdleReaderHoldsNoBuffer()
    {
        var (pipe, peer) = await ConnectedAsync();
        using var _ = pipe;
        using var __ = peer;
        Assert.False(pipe.HoldsBuffers);

        await peer.SendAsync(new byte[] { 1, 2, 3 });
        var first = await pipe.Input.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal([1, 2, 3], first.Buffer.ToArray());

        // Nothing consumed, everything examined: the next read must wait for more and return all of it.
        pipe.Input.AdvanceTo(first.Buffer.Start, first.Buffer.End);
        await peer.SendAsync(new byte[] { 4, 5 });
        var second = await ReadAtLeastAsync(pipe.Input, 5);
        Assert.Equal([1, 2, 3, 4, 5], second.Buffer.ToArray());
        Assert.True(pipe.HoldsBuffers);

        pipe.Input.AdvanceTo(second.Buffer.End);
        Assert.False(pipe.HoldsBuffers);
    }

    [Fact]
    public async Task AMessageLargerThanTheLargestReceive_GrowsTheBuffer_AndArrivesWhole()
    {
        var (pipe, peer) = await ConnectedAsync();
        using var _ = pipe;
        using var __ = peer;
        var message = new byte[300_000];
        new Random(7).NextBytes(message);

        var send = peer.SendAsync(message);
        var result = await ReadAtLeastAsync(pipe.Input, message.Length);
        await send;
        Assert.True(result.Buffer.ToArray().AsSpan().SequenceEqual(message));
        pipe.Input.AdvanceTo(result.Buffer.End);
        Assert.False(pipe.HoldsBuffers);
    }

    [Fact]
    public async Task CancelPendingRead_WakesAWaitingRead_AndTheConnectionCanStillSend()
    {
        var (pipe, peer) = await ConnectedAsync();
        using var _ = pipe;
        using var __ = peer;
        var read = pipe.Input.ReadAsync().AsTask();
        Assert.False(read.IsCompleted);

        pipe.Input.CancelPendingRead();
        var result = await read.WaitAsync(Timeout);
        Assert.True(result.IsCanceled);

        // The session's goodbye (a v5 DISCONNECT) still reaches the peer.
        pipe.Output.Write(new byte[] { 0xE0, 0x01, 0x8D });
        await pipe.Output.FlushAsync();
        Assert.Equal([0xE0, 0x01, 0x8D], await ReceiveExactlyAsync(peer, 3));
    }

    [Fact]
    public async Task PeersFin_CompletesTheReader()
    {
        var (pipe, peer) = await ConnectedAsync();
        using var _ = pipe;
        await peer.SendAsync(new byte[] { 9 });
        peer.Shutdown(SocketShutdown.Send);
        peer.Dispose();

        var result = await ReadAtLeastAsync(pipe.Input, 1);
        pipe.Input.AdvanceTo(result.Buffer.End);
        var end = await pipe.Input.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.True(end.IsCompleted);
        Assert.True(end.Buffer.IsEmpty);
    }

    [Fact]
    public async Task WritesFlushedFromManyThreads_ArriveWholeAndInEachWritersOrder_AndCloseDeliversTheRest()
    {
        var (pipe, peer) = await ConnectedAsync();
        using var __ = peer;
        const int Writers = 4;
        const int PerWriter = 2000;
        var writeLock = new Lock();

        // Each record: writer id, then a big-endian sequence number; the session serializes writers the same way.
        var tasks = Enumerable.Range(0, Writers).Select(writer => Task.Run(async () =>
        {
            for (var i = 0; i < PerWriter; i++)
            {
                ValueTask<FlushResult> flush;
                lock (writeLock)
                {
                    var span = pipe.Output.GetSpan(3);
                    span[0] = (byte)writer;
                    span[1] = (byte)(i >> 8);
                    span[2] = (byte)i;
                    pipe.Output.Advance(3);
                    flush = pipe.Output.FlushAsync();
                }

                await flush;
            }
        })).ToArray();
        await Task.WhenAll(tasks).WaitAsync(Timeout);

        // The last bytes may still be in the send loop: closing must let them out before FIN.
        await pipe.CloseAsync(TimeSpan.FromSeconds(10));
        var received = await ReceiveToEndAsync(peer);
        Assert.Equal(Writers * PerWriter * 3, received.Length);
        var next = new int[Writers];
        for (var offset = 0; offset < received.Length; offset += 3)
        {
            var writer = received[offset];
            Assert.Equal(next[writer]++, (received[offset + 1] << 8) | received[offset + 2]);
        }

        Assert.All(next, static count => Assert.Equal(PerWriter, count));
        Assert.False(pipe.HoldsBuffers);
    }

    [Fact]
    public async Task APeerThatDoesNotRead_MakesFlushWait_UntilItReadsAgain()
    {
        var (pipe, peer) = await ConnectedAsync(smallBuffers: true);
        using var _ = pipe;
        using var __ = peer;
        var chunk = new byte[16 * 1024];
        long written = 0;
        ValueTask<FlushResult> flush = default;

        // Bounded: the kernel buffers plus our 64 KB threshold are far below 64 MB.
        while (written < 64L * 1024 * 1024)
        {
            pipe.Output.Write(chunk);
            written += chunk.Length;
            flush = pipe.Output.FlushAsync();
            if (!flush.IsCompleted)
            {
                break;
            }
        }

        Assert.False(flush.IsCompleted, "the writer never pushed back");
        var drain = ReceiveExactlyAsync(peer, checked((int)written));
        var result = await flush.AsTask().WaitAsync(Timeout);
        Assert.False(result.IsCompleted);
        Assert.Equal(written, (await drain.WaitAsync(Timeout)).Length);
    }

    private static async Task<(SocketDuplexPipe Pipe, Socket Peer)> ConnectedAsync(bool smallBuffers = false)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (smallBuffers)
        {
            peer.ReceiveBufferSize = 4096;
        }

        var accept = listener.AcceptAsync();
        await peer.ConnectAsync((IPEndPoint)listener.LocalEndPoint!);
        var server = await accept.WaitAsync(Timeout);
        if (smallBuffers)
        {
            server.SendBufferSize = 4096;
        }

        return (new SocketDuplexPipe(server), peer);
    }

    private static async Task<ReadResult> ReadAtLeastAsync(PipeReader reader, int count)
    {
        while (true)
        {
            var result = await reader.ReadAsync().AsTask().WaitAsync(Timeout);
            if (result.Buffer.Length >= count || result.IsCompleted)
            {
                return result;
            }

            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    private static async Task<byte[]> ReceiveExactlyAsync(Socket socket, int count)
    {
        var buffer = new byte[count];
        var got = 0;
        while (got < count)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(got)).AsTask().WaitAsync(Timeout);
            Assert.NotEqual(0, n);
            got += n;
        }

        return buffer;
    }

    private static async Task<byte[]> ReceiveToEndAsync(Socket socket)
    {
        var all = new ArrayBufferWriter<byte>();
        while (true)
        {
            var n = await socket.ReceiveAsync(all.GetMemory(8192)).AsTask().WaitAsync(Timeout);
            if (n == 0)
            {
                return all.WrittenSpan.ToArray();
            }

            all.Advance(n);
        }
    }
}

/// <summary>Both plain-TCP transports (ours and Kestrel's) carry the same broker.</summary>
public sealed class MqttTcpTransportTests
{
    [Theory]
    [InlineData("Sockets")]
    [InlineData("Kestrel")]
    public async Task LargeQoS1Publish_RoundTrips_OnEitherTcpTransport(string transport)
    {
        await using var server = await EngineTestServer.StartAsync($"Relay:Mqtt:TcpTransport={transport}");
        var (subscriber, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "sub");
        await using var s = subscriber;
        await subscriber.SubscribeAndWaitAsync("big/#", 1);
        var (publisher, _) = await MqttTestClient.ConnectAsync(server.MqttPort, "pub");
        await using var p = publisher;

        // Larger than any single receive (64 KB) and than the writer's back-pressure threshold.
        var payload = new string('x', 200_000) + "end";
        await publisher.PublishAsync("big/one", payload, qos: 1);
        Assert.Equal(Relay.Protocol.Mqtt.MqttPacketType.PubAck, (await publisher.ReceiveAsync(Relay.Protocol.Mqtt.MqttPacketType.PubAck)).Type);
        var delivered = await subscriber.ReceiveAsync(Relay.Protocol.Mqtt.MqttPacketType.Publish);
        Assert.Equal(payload, delivered.PayloadText);
        Assert.Equal(2, server.MqttMetrics().ClientsConnected);
    }
}
