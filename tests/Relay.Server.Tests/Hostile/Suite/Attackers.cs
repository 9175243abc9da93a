using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace Relay.Server.Tests.Hostile.Suite;

/// <summary>Raw sockets from attacker addresses (127.0.0.2 and up), plain or TLS, and the one question the suite asks of them: did the server close it?</summary>
internal static class Attackers
{
    /// <summary>Attacker <paramref name="n"/> (1-based): 127.0.0.(n+1). The sentinel and the back end are on 127.0.0.1.</summary>
    public static IPAddress Address(int n) => new([127, 0, 0, (byte)(n + 1)]);

    public static async Task<Socket> TcpAsync(IPAddress local, int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(local, 0));
        using var connect = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), connect.Token);
        return socket;
    }

    /// <summary>A TCP connection from <paramref name="local"/>, as a stream: TLS (the server's certificate not checked: we attack it, not trust it) or plain.</summary>
    public static async Task<Stream> StreamAsync(IPAddress local, int port, bool tls)
    {
        var socket = await TcpAsync(local, port);
        var stream = new NetworkStream(socket, ownsSocket: true);
        if (!tls)
        {
            return stream;
        }

        var ssl = new SslStream(stream, leaveInnerStreamOpen: false, static (_, _, _, _) => true);
        using var handshake = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }, handshake.Token);
        return ssl;
    }

    /// <summary>Writes, treating a reset by the server (it may close while we still send) as part of the answer.</summary>
    public static async Task<bool> TryWriteAsync(Stream stream, ReadOnlyMemory<byte> bytes)
    {
        try
        {
            using var write = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await stream.WriteAsync(bytes, write.Token);
            await stream.FlushAsync(write.Token);
            return true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Reads and discards until the server closes (EOF or reset); false if it is still open after <paramref name="bound"/>.</summary>
    public static async Task<bool> ClosedByServerAsync(Stream stream, TimeSpan? bound = null)
    {
        using var deadline = new CancellationTokenSource(bound ?? TimeSpan.FromSeconds(30));
        var buffer = new byte[16 * 1024];
        try
        {
            while (await stream.ReadAsync(buffer, deadline.Token) > 0)
            {
            }

            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Security.Authentication.AuthenticationException)
        {
            return true;
        }
    }

    /// <summary>The request line and headers of an RFC 6455 §4.1 opening handshake for MQTT over WebSocket.</summary>
    public static byte[] WebSocketUpgrade(string path) => Encoding.ASCII.GetBytes(
        $"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n");

    /// <summary>Reads the HTTP response head (to the blank line) and returns it.</summary>
    public static async Task<string> ReadResponseHeadAsync(Stream stream)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var head = new List<byte>();
        var one = new byte[1];
        while (head.Count < 16 * 1024)
        {
            if (await stream.ReadAsync(one, deadline.Token) == 0)
            {
                break;
            }

            head.Add(one[0]);
            if (head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n')
            {
                break;
            }
        }

        return Encoding.ASCII.GetString([.. head]);
    }

    /// <summary>
    /// A client-to-server WebSocket frame (RFC 6455 §5.2: FIN, opcode, the MASK bit a client MUST set, the
    /// 64-bit extended length when <paramref name="declaredLength"/> says so) carrying <paramref name="payload"/> masked.
    /// </summary>
    public static byte[] WebSocketFrame(byte opcode, ReadOnlySpan<byte> payload, ulong? declaredLength = null)
    {
        var frame = new List<byte> { (byte)(0x80 | opcode) };
        var length = declaredLength ?? (ulong)payload.Length;
        if (declaredLength is not null || length > 65535)
        {
            frame.Add(0x80 | 127);
            for (var shift = 56; shift >= 0; shift -= 8)
            {
                frame.Add((byte)(length >> shift));
            }
        }
        else if (length > 125)
        {
            frame.Add(0x80 | 126);
            frame.Add((byte)(length >> 8));
            frame.Add((byte)length);
        }
        else
        {
            frame.Add((byte)(0x80 | (int)length));
        }

        byte[] mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.AddRange(mask);
        for (var i = 0; i < payload.Length; i++)
        {
            frame.Add((byte)(payload[i] ^ mask[i % 4]));
        }

        return [.. frame];
    }
}
