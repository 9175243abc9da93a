using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Stun;

namespace Relay.Server.Tests.DeviceClientNat;

/// <summary>
/// Hostile and broken servers: random datagrams, correct answers with bytes flipped, cut or appended, and a
/// TCP stream of garbage. The client must end every attempt with a timeout, a TURN error or a protocol
/// exception, within its own timeout, and leave no task faulted unobserved. Runs alone because the
/// unobserved-task check is process-wide.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public sealed class TurnClientFuzzTests
{
    private static readonly TimeSpan HangBound = TimeSpan.FromSeconds(10);

    private static TurnClientOptions Tight => new()
    {
        Retransmission = new StunClientOptions { InitialRto = TimeSpan.FromMilliseconds(5), MaxRequests = 3, LastWaitMultiplier = 4 },
        DisposeTimeout = TimeSpan.FromMilliseconds(200),
    };

    private static readonly TurnCredentials Credentials = new("u", "p");

    [Fact]
    public Task RandomDatagrams_EndInTimeoutOrAnError() => WithUnobservedCheckAsync(async () =>
    {
        var random = new Random(1234);
        using var fake = FakeServer((request, from) =>
        {
            lock (random)
            {
                return RandomAnswer(random, request);
            }
        }, out var endpoint);

        for (var i = 0; i < 40; i++)
        {
            var outcome = await RunAsync(endpoint, TurnTransport.Udp);
            Assert.True(outcome is nameof(TimeoutException) or nameof(TurnErrorException) or nameof(TurnProtocolException), outcome);
        }
    });

    [Fact]
    public Task MutatedAnswers_EndInSuccessTimeoutOrAnError() => WithUnobservedCheckAsync(async () =>
    {
        var random = new Random(99);
        var mutate = true;
        using var fake = FakeServer((request, from) =>
        {
            var answer = CorrectAnswer(request, from);
            lock (random)
            {
                return answer is null || !Volatile.Read(ref mutate) ? answer : Mutate(random, answer);
            }
        }, out var endpoint);

        // The unmutated fake is a correct server: the client gets through it, so the mutations are what fails.
        Volatile.Write(ref mutate, false);
        Assert.Equal("success", await RunAsync(endpoint, TurnTransport.Udp));
        Volatile.Write(ref mutate, true);

        var outcomes = new Dictionary<string, int>();
        for (var i = 0; i < 60; i++)
        {
            var outcome = await RunAsync(endpoint, TurnTransport.Udp);
            Assert.True(outcome is "success" or nameof(TimeoutException) or nameof(TurnErrorException) or nameof(TurnProtocolException), outcome);
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        }

        Assert.True(outcomes.GetValueOrDefault(nameof(TimeoutException)) > 0, string.Join(", ", outcomes));
    });

    [Fact]
    public Task GarbageStream_EndsInAProtocolErrorOrTimeout() => WithUnobservedCheckAsync(async () =>
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var endpoint = (IPEndPoint)listener.LocalEndPoint!;
        using var stop = new CancellationTokenSource();
        var random = new Random(7);
        var server = Task.Run(async () =>
        {
            var connections = new List<Socket>();
            try
            {
                while (true)
                {
                    var connection = await listener.AcceptAsync(stop.Token);
                    connections.Add(connection);
                    var request = new byte[2048];
                    var read = await connection.ReceiveAsync(request, SocketFlags.None, stop.Token);
                    byte[] answer;
                    lock (random)
                    {
                        answer = RandomAnswer(random, request.AsSpan(0, read).ToArray()) ?? [0xFF];
                    }

                    await connection.SendAsync(answer, SocketFlags.None, stop.Token);
                }
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                connections.ForEach(static c => c.Dispose());
            }
        });

        for (var i = 0; i < 20; i++)
        {
            var outcome = await RunAsync(endpoint, TurnTransport.Tcp);
            Assert.True(outcome is nameof(TimeoutException) or nameof(TurnErrorException) or nameof(TurnProtocolException) or nameof(IOException), outcome);
        }

        await stop.CancelAsync();
        await server;
    });

    private static async Task<string> RunAsync(IPEndPoint endpoint, TurnTransport transport)
    {
        var attempt = Task.Run(async () =>
        {
            try
            {
                await using var client = await TurnClient.AllocateAsync(endpoint, transport, Credentials, Tight);
                return "success";
            }
            catch (Exception e)
            {
                return e.GetType().Name + (e is TimeoutException or TurnErrorException or TurnProtocolException or IOException ? string.Empty : ": " + e);
            }
        });

        // A client that outlives its own retransmission schedule by this much has hung.
        return await attempt.WaitAsync(HangBound);
    }

    private static async Task WithUnobservedCheckAsync(Func<Task> test)
    {
        var unobserved = new List<Exception>();
        void Handler(object? sender, UnobservedTaskExceptionEventArgs e)
        {
            lock (unobserved)
            {
                unobserved.Add(e.Exception);
            }
        }

        TaskScheduler.UnobservedTaskException += Handler;
        try
        {
            await test();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
        }
        finally
        {
            TaskScheduler.UnobservedTaskException -= Handler;
        }

        Assert.Empty(unobserved);
    }

    /// <summary>A UDP "server" answering each datagram with whatever <paramref name="answer"/> makes of it.</summary>
    private static FakeUdpServer FakeServer(Func<byte[], IPEndPoint, byte[]?> answer, out IPEndPoint endpoint)
    {
        var fake = new FakeUdpServer(answer);
        endpoint = fake.Endpoint;
        return fake;
    }

    private static byte[]? RandomAnswer(Random random, byte[] request)
    {
        switch (random.Next(4))
        {
            case 0:
                return RandomBytes(random, random.Next(0, 120));
            case 1:
            {
                // A STUN-shaped answer to this very transaction: random class and method bits, random attributes.
                var body = RandomBytes(random, random.Next(0, 30) * 4);
                var answer = new byte[20 + body.Length];
                answer[0] = (byte)random.Next(0, 0x40);
                answer[1] = (byte)random.Next(256);
                answer[2] = (byte)(body.Length >> 8);
                answer[3] = (byte)body.Length;
                request.AsSpan(4, Math.Min(16, Math.Max(0, request.Length - 4))).CopyTo(answer.AsSpan(4));
                body.CopyTo(answer, 20);
                return answer;
            }

            case 2:
            {
                // ChannelData-shaped.
                var answer = RandomBytes(random, random.Next(4, 60));
                answer[0] = (byte)(0x40 | (answer[0] & 0x3F));
                return answer;
            }

            default:
                return null;
        }
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    private static byte[] Mutate(Random random, byte[] answer)
    {
        var copy = answer.ToArray();
        switch (random.Next(3))
        {
            case 0:
                for (var flips = random.Next(1, 4); flips > 0; flips--)
                {
                    copy[random.Next(copy.Length)] ^= (byte)random.Next(1, 256);
                }

                return copy;
            case 1:
                return copy[..random.Next(copy.Length)];
            default:
                return [.. copy, .. RandomBytes(random, random.Next(1, 9))];
        }
    }

    /// <summary>
    /// A minimal correct long-term-credential TURN responder (RFC 8489 §9.2, RFC 8656 §7): 401 with REALM and
    /// NONCE to an unauthenticated request, a signed success to an authenticated one.
    /// </summary>
    private static byte[]? CorrectAnswer(byte[] request, IPEndPoint from)
    {
        if (StunMessageReader.TryParse(request, StunReaderLimits.Default, out var message, out _) != OperationStatus.Done || message.Header.Class != StunClass.Request)
        {
            return null;
        }

        var buffer = new byte[512];
        var method = message.Header.Method;
        if (!message.HasAttribute(StunAttributeType.Username))
        {
            var challenge = new StunMessageWriter(buffer, StunHeader.ComposeType(method, StunClass.ErrorResponse), message.Header.TransactionId);
            challenge.WriteErrorCode(401, "Unauthorized"u8);
            challenge.WriteAttribute(StunAttributeType.Realm, "r"u8);
            challenge.WriteAttribute(StunAttributeType.Nonce, "fake-nonce"u8);
            challenge.WriteFingerprint();
            return challenge.Written.ToArray();
        }

        var key = new byte[16];
        StunCredentials.ComputeLongTermKey(StunPasswordAlgorithm.Md5, "u", "r", "p", key);
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(method, StunClass.SuccessResponse), message.Header.TransactionId);
        if (method == (ushort)StunMethod.Allocate)
        {
            writer.WriteXorAddress(StunAttributeType.XorRelayedAddress, StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Loopback, 50000)));
            writer.WriteXorAddress(StunAttributeType.XorMappedAddress, StunAddress.FromEndPoint(from));
        }

        writer.WriteUInt32(StunAttributeType.Lifetime, method == (ushort)StunMethod.Refresh ? 0u : 600u);
        writer.WriteAttribute(StunAttributeType.Software, Encoding.UTF8.GetBytes("fake"));
        writer.WriteMessageIntegrity(key);
        writer.WriteFingerprint();
        return writer.Written.ToArray();
    }

    private sealed class FakeUdpServer : IDisposable
    {
        private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;

        public FakeUdpServer(Func<byte[], IPEndPoint, byte[]?> answer)
        {
            _socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            Endpoint = (IPEndPoint)_socket.LocalEndPoint!;
            _loop = Task.Run(async () =>
            {
                var buffer = new byte[65536];
                while (!_stop.IsCancellationRequested)
                {
                    SocketReceiveFromResult received;
                    try
                    {
                        received = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), _stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                    catch (SocketException)
                    {
                        continue;
                    }

                    var reply = answer(buffer[..received.ReceivedBytes], (IPEndPoint)received.RemoteEndPoint);
                    if (reply is not null)
                    {
                        await _socket.SendToAsync(reply, SocketFlags.None, received.RemoteEndPoint);
                    }
                }
            });
        }

        public IPEndPoint Endpoint { get; }

        public void Dispose()
        {
            _stop.Cancel();
            _loop.GetAwaiter().GetResult();
            _socket.Dispose();
            _stop.Dispose();
        }
    }
}
