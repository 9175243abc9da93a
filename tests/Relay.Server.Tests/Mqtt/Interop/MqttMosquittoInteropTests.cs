using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Mqtt;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>
/// The codec against the real mosquitto clients over a TCP socket on 127.0.0.1: a minimal broker loop made
/// of nothing but <see cref="MqttFrameReader"/>, <see cref="MqttPacketReader"/> and <see cref="MqttPacketWriter"/>
/// must satisfy mosquitto_pub (CONNACK, PUBACK, PUBREC/PUBCOMP) and mosquitto_sub (SUBACK, then a PUBLISH it
/// prints). A missing client fails the test: a skipped interop test proves nothing.
/// </summary>
public sealed class MqttMosquittoInteropTests
{
    [Theory]
    [InlineData("mqttv31", 1)]
    [InlineData("mqttv311", 1)]
    [InlineData("mqttv311", 2)]
    [InlineData("mqttv5", 1)]
    [InlineData("mqttv5", 2)]
    public async Task Mosquitto_pub_is_acknowledged_and_its_publish_decoded(string protocol, int qos)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var broker = Task.Run(() => ServeOneAsync(listener, outgoing: null));
        var (exit, output) = await RunAsync("mosquitto_pub", "-h", "127.0.0.1", "-p", port.ToString(), "-V", protocol, "-i", "interop",
            "-t", "devices/7/cmd", "-m", "reboot", "-q", qos.ToString(), "-u", "alice", "-P", "pw");
        var log = await broker.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(exit == 0, $"mosquitto_pub exited {exit}: {output}\n{string.Join('\n', log)}");
        Assert.Contains($"PUBLISH devices/7/cmd qos={qos} payload=reboot", log);
        Assert.Contains("DISCONNECT", log);
    }

    [Theory]
    [InlineData("mqttv311")]
    [InlineData("mqttv5")]
    public async Task Mosquitto_sub_gets_a_suback_and_prints_the_publish_we_write(string protocol)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var broker = Task.Run(() => ServeOneAsync(listener, outgoing: "state/+"));
        var (exit, output) = await RunAsync("mosquitto_sub", "-h", "127.0.0.1", "-p", port.ToString(), "-V", protocol, "-i", "sub",
            "-t", "state/+", "-q", "1", "-C", "1", "-v");
        var log = await broker.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(exit == 0, $"mosquitto_sub exited {exit}: {output}\n{string.Join('\n', log)}");
        Assert.Contains("state/7 online", output, StringComparison.Ordinal);
        Assert.Contains("SUBSCRIBE state/+ qos=1", log);
        Assert.Contains("PUBACK 1", log);
    }

    /// <summary>One connection: frame, decode, answer, until the client leaves. Returns what it saw.</summary>
    private static async Task<List<string>> ServeOneAsync(TcpListener listener, string? outgoing)
    {
        var log = new List<string>();
        using var client = await listener.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(30));
        var stream = client.GetStream();
        var buffer = new byte[65_536];
        var filled = 0;
        var version = MqttProtocolVersion.V311;
        var output = new ArrayBufferWriter<byte>();
        while (true)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(filled)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            if (read == 0)
            {
                return log;
            }

            filled += read;
            var sequence = new ReadOnlySequence<byte>(buffer, 0, filled);
            var done = false;
            while (!done)
            {
                var status = MqttFrameReader.TryRead(ref sequence, buffer.Length, out var frame, out var error);
                if (status == OperationStatus.NeedMoreData)
                {
                    break;
                }

                Assert.Equal(OperationStatus.Done, status);
                Assert.Equal(MqttDecodeError.None, error);
                output.ResetWrittenCount();
                done = Handle(frame, ref version, output, log, outgoing);
                await stream.WriteAsync(output.WrittenMemory);
            }

            // Keep the unread tail (a partial packet) at the front of the buffer.
            var consumed = filled - (int)sequence.Length;
            buffer.AsSpan(consumed, filled - consumed).CopyTo(buffer);
            filled -= consumed;
            if (done)
            {
                return log;
            }
        }
    }

    private static bool Handle(in MqttFrame frame, ref MqttProtocolVersion version, ArrayBufferWriter<byte> output, List<string> log, string? outgoing)
    {
        var v = version;
        switch (frame.Type)
        {
            case MqttPacketType.Connect:
                Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadConnect(frame, out var connect));
                version = v = connect.Version == MqttProtocolVersion.V310 ? MqttProtocolVersion.V311 : connect.Version;
                log.Add($"CONNECT {connect.Version} {Text(connect.ClientId)}");
                MqttPacketWriter.WriteConnAck(output, v, false, 0, default);
                return false;
            case MqttPacketType.Publish:
                Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadPublish(frame, v, out var publish));
                log.Add($"PUBLISH {Text(publish.Topic)} qos={publish.QoS} payload={Text(publish.Payload)}");
                if (publish.QoS > 0)
                {
                    MqttPacketWriter.WriteAck(output, publish.QoS == 1 ? MqttPacketType.PubAck : MqttPacketType.PubRec, v, publish.PacketId, MqttReasonCode.Success);
                }

                return false;
            case MqttPacketType.PubRel:
                Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(frame, v, out var pubRel));
                MqttPacketWriter.WriteAck(output, MqttPacketType.PubComp, v, pubRel.PacketId, MqttReasonCode.Success);
                return false;
            case MqttPacketType.PubAck:
                Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadAck(frame, v, out var pubAck));
                log.Add($"PUBACK {pubAck.PacketId}");
                return false;
            case MqttPacketType.Subscribe:
                Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadSubscribe(frame, v, out var subscribe));
                Span<byte> granted = stackalloc byte[subscribe.EntryCount];
                var i = 0;
                foreach (var entry in subscribe.GetEntries())
                {
                    log.Add($"SUBSCRIBE {Text(entry.TopicFilter)} qos={entry.MaximumQoS}");
                    granted[i++] = entry.MaximumQoS;
                }

                MqttPacketWriter.WriteSubAck(output, v, subscribe.PacketId, granted);
                if (outgoing is not null && MqttTopic.Matches(outgoing, "state/7"))
                {
                    MqttPacketWriter.WritePublish(output, v, "state/7"u8, 1, false, false, 1, default, "online"u8);
                }

                return false;
            case MqttPacketType.PingReq:
                MqttPacketWriter.WritePingResp(output);
                return false;
            case MqttPacketType.Disconnect:
                Assert.Equal(MqttDecodeError.None, MqttPacketReader.ReadDisconnect(frame, v, out _));
                log.Add("DISCONNECT");
                return true;
            default:
                log.Add($"unexpected {frame.Type}");
                return true;
        }
    }

    private static async Task<(int ExitCode, string Output)> RunAsync(string program, params string[] arguments)
    {
        var path = Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(d => Path.Combine(d, program)).FirstOrDefault(File.Exists);
        Assert.True(path is not null, $"{program} is not installed (apt-get install mosquitto-clients)");
        var start = new ProcessStartInfo("timeout", ["30", path!, .. arguments])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    private static string Text(in ReadOnlySequence<byte> utf8) => System.Text.Encoding.UTF8.GetString(utf8.ToArray());
}
