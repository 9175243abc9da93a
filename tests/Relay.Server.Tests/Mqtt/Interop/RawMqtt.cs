using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Relay.Server.Tests.Mqtt.Interop;

/// <summary>Hand-built MQTT bytes over a raw socket, for input no real client would send.</summary>
internal static class RawMqtt
{
    /// <summary>
    /// A complete MQTT 3.1.1 CONNECT (§3.1): fixed header 0x10, remaining length, protocol name "MQTT",
    /// level 4, flags (user name + password + clean session), keep alive, then the payload strings.
    /// </summary>
    public static byte[] Connect311(string clientId, string user, string password, ushort keepAlive = 60)
    {
        var body = new List<byte>();
        void Str(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            body.Add((byte)(bytes.Length >> 8));
            body.Add((byte)bytes.Length);
            body.AddRange(bytes);
        }

        Str("MQTT");
        body.Add(4);
        body.Add(0b1100_0010);
        body.Add((byte)(keepAlive >> 8));
        body.Add((byte)keepAlive);
        Str(clientId);
        Str(user);
        Str(password);
        var packet = new List<byte> { 0x10 };
        // §2.2.3: variable byte integer, 7 bits per byte, high bit = more bytes follow.
        var length = body.Count;
        do
        {
            var digit = (byte)(length % 128);
            length /= 128;
            packet.Add(length > 0 ? (byte)(digit | 0x80) : digit);
        }
        while (length > 0);
        packet.AddRange(body);
        return [.. packet];
    }

    public static async Task<TcpClient> ConnectAsync(int port)
    {
        var client = new TcpClient(AddressFamily.InterNetwork) { NoDelay = true };
        await client.ConnectAsync(IPAddress.Loopback, port);
        return client;
    }

    /// <summary>
    /// Reads until the broker closes the connection (end of stream or reset) and returns what it sent
    /// before closing; fails if it is still open after <paramref name="timeout"/>.
    /// </summary>
    public static async Task<byte[]> WaitForCloseAsync(TcpClient client, MqttBroker broker, string what, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        var received = new List<byte>();
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                // The socket, not GetStream(): TcpClient refuses a stream once the send side is shut down.
                var n = await client.Client.ReceiveAsync(buffer, SocketFlags.None, deadline.Token);
                if (n == 0)
                {
                    return [.. received];
                }

                received.AddRange(buffer.AsSpan(0, n));
            }
        }
        catch (SocketException)
        {
            // A reset is a close too.
            return [.. received];
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"{what}: the broker kept the connection open.\n--- broker:\n{Paho.Tail(broker.Log)}");
            throw;
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes or fails.</summary>
    public static async Task<byte[]> ReadExactlyAsync(TcpClient client, int count, TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        var buffer = new byte[count];
        await client.GetStream().ReadExactlyAsync(buffer, deadline.Token);
        return buffer;
    }
}
