using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.StunTurn;
using Relay.Server.Turn;

namespace Relay.Fuzz;

/// <summary>
/// <c>stun</c>: the STUN/TURN front door on port 3478 (<see cref="StunTurnUdpListener"/>'s dispatch into the
/// Binding service and the TURN relay: allocations, permissions, channels, refresh, Send/Data, RFC 6062) and
/// its TCP framing (<see cref="StunTurnTcpConnectionHandler"/> over in-memory pipes), from one fixed client.
/// <para>
/// An input is a list of records <c>[control:1][length:2, big-endian][bytes]</c> (the last may be short).
/// Control bit 0: the bytes go to the TCP connection's stream (in order) instead of being one UDP datagram.
/// Bit 1: sign them as user <see cref="User"/> would: a NONCE of the server's form gets a valid nonce for
/// this client, then MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT are recomputed wherever they are, so mutated
/// authenticated requests get past the integrity check and reach the handlers (RFC 8489 §9.2).
/// </para>
/// <para>
/// The relay is process-wide (its loops are threads) and reset after each input: the client's allocations are
/// deleted, and one left over is a finding. Peers are confined to this host: only 127.0.0.1 at the relay's own
/// ports (19000-19999) is allowed, every other IPv4 range and all of IPv6 are denied, so nothing the fuzzer
/// writes leaves the machine.
/// </para>
/// </summary>
internal sealed class StunTarget : IFuzzTarget
{
    public const string User = "fuzz";
    public const string Password = "fuzz-password";
    public const string Realm = "relay";

    // A placeholder the seeds carry in NONCE; signing replaces any nonce of the server's form.
    public static byte[] PlaceholderNonce { get; } = [.. TurnNonceService.Cookie, .. Enumerable.Repeat((byte)'A', TurnNonceService.MaxLength - TurnNonceService.Cookie.Length)];

    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly string _dataDirectory = Directory.CreateTempSubdirectory("relay-fuzz-stun-").FullName;
    private readonly FaultLog _faults = new();
    private readonly ServiceProvider _provider;
    private readonly StunTurnUdpListener _udp;
    private readonly StunTurnTcpConnectionHandler _tcp;
    private readonly TurnRelay _relay;
    private readonly TurnNonceService _nonces;
    private readonly StunBindingService _binding;
    private readonly Socket _clientSocket;
    private readonly StunAddress _client;
    private readonly StunAddress _local = StunAddress.FromEndPoint(new IPEndPoint(IPAddress.Loopback, 3478));
    private readonly byte[] _md5Key = new byte[16];
    private readonly byte[] _sha256Key = new byte[32];

    public StunTarget()
    {
        var settings = new Dictionary<string, string?>
        {
            ["Relay:DataDirectory"] = _dataDirectory,
            ["Relay:Turn:Realm"] = Realm,
            ["Relay:Turn:Users:0"] = $"{User}:{Password}",
            ["Relay:Turn:RelayAddresses:0"] = "127.0.0.1",
            ["Relay:Turn:RelayPortMin"] = "19000",
            ["Relay:Turn:RelayPortMax"] = "19999",
            ["Relay:Turn:AllowedPeers:0"] = "127.0.0.1/32",
            ["Relay:Stun:ListenAddresses:0"] = "127.0.0.1",
        };

        // Every IPv4 address but 127/8, and all of IPv6: a deny beats the allow above (TurnPeerPolicy).
        string[] denied = ["0.0.0.0/2", "64.0.0.0/3", "96.0.0.0/4", "112.0.0.0/5", "120.0.0.0/6", "124.0.0.0/7", "126.0.0.0/8", "128.0.0.0/1", "::/0"];
        for (var i = 0; i < denied.Length; i++)
        {
            settings[$"Relay:Turn:DeniedPeers:{i}"] = denied[i];
        }

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(configuration);
        services.AddLogging(logging => logging.ClearProviders().AddProvider(_faults).SetMinimumLevel(LogLevel.Error));
        services.AddMetrics();
        services.AddRelayStunTurn(configuration);
        services.AddSingleton<TimeProvider>(new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)));
        _provider = services.BuildServiceProvider();
        _relay = _provider.GetRequiredService<TurnRelay>();
        _relay.StartAsync(CancellationToken.None).GetAwaiter().GetResult();
        _udp = _provider.GetRequiredService<StunTurnUdpListener>();
        _tcp = _provider.GetRequiredService<StunTurnTcpConnectionHandler>();
        _nonces = _provider.GetRequiredService<TurnNonceService>();
        _binding = _provider.GetRequiredService<StunBindingService>();

        // The client is a socket of ours on loopback: whatever the relay sends the client lands here, unread.
        _clientSocket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _clientSocket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _client = StunAddress.FromEndPoint((IPEndPoint)_clientSocket.LocalEndPoint!);
        StunCredentials.ComputeLongTermKey(StunPasswordAlgorithm.Md5, User, Realm, Password, _md5Key);
        StunCredentials.ComputeLongTermKey(StunPasswordAlgorithm.Sha256, User, Realm, Password, _sha256Key);
    }

    public void Execute(ReadOnlySpan<byte> input)
    {
        var response = new byte[_binding.ResponseBufferSize];
        var stream = new List<byte>();
        var udpContext = new StunRequestContext(_client, _local, StunTransport.Udp);
        try
        {
            while (input.Length >= 3)
            {
                var control = input[0];
                var length = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(input[1..]), input.Length - 3);
                var record = input.Slice(3, length).ToArray();
                input = input[(3 + length)..];
                if ((control & 2) != 0)
                {
                    Sign(record);
                }

                if ((control & 1) != 0)
                {
                    stream.AddRange(record);
                    continue;
                }

                var reply = _udp.Dispatch(record, udpContext, _clientSocket, response);
                if (reply.Length > response.Length)
                {
                    throw new FuzzFinding($"stun: a reply of {reply.Length} bytes for a {response.Length}-byte buffer");
                }

                if (Trace)
                {
                    Console.Error.WriteLine($"udp {Describe(record)} -> {(reply.HasResponse ? Describe(response.AsSpan(0, reply.Length)) : "no reply")}");
                }
            }

            if (stream.Count > 0)
            {
                RunTcp([.. stream]);
            }
        }
        finally
        {
            // Allocations over UDP outlive the datagram; this input's must not meet the next one.
            _relay.OnConnectionClosed(new TurnContext(_client, _local, StunTransport.Udp, _clientSocket, null));
        }

        _faults.ThrowIfAny("stun");
        if (_relay.AllocationCount != 0)
        {
            throw new FuzzFinding($"stun: {_relay.AllocationCount} allocation(s) left after the client's were deleted and its TCP connection closed");
        }
    }

    /// <summary>RELAY_FUZZ_TRACE=1: each message and its answer on stderr, for triage and for checking seeds get past authentication.</summary>
    private static bool Trace { get; } = Environment.GetEnvironmentVariable("RELAY_FUZZ_TRACE") == "1";

    private static string Describe(ReadOnlySpan<byte> message)
    {
        if (message.Length < StunConstants.HeaderLength)
        {
            return $"{message.Length} bytes";
        }

        var type = BinaryPrimitives.ReadUInt16BigEndian(message);
        var text = $"{(StunMethod)StunHeader.GetMethod(type)} {StunHeader.GetClass(type)}";
        for (var offset = StunConstants.HeaderLength; offset + 8 <= message.Length;)
        {
            var attribute = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
            var length = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
            if (attribute == (ushort)StunAttributeType.ErrorCode)
            {
                return $"{text} {(message[offset + 6] * 100) + message[offset + 7]}";
            }

            offset += 4 + ((length + 3) & ~3);
        }

        return text;
    }

    /// <summary>One TCP connection carrying <paramref name="bytes"/>, then closed by the client.</summary>
    private void RunTcp(byte[] bytes)
    {
        var toServer = new Pipe(new PipeOptions(minimumSegmentSize: 32, pauseWriterThreshold: 0, useSynchronizationContext: false));
        var fromServer = new Pipe(new PipeOptions(useSynchronizationContext: false));
        toServer.Writer.WriteAsync(bytes).AsTask().GetAwaiter().GetResult();
        toServer.Writer.Complete();
        var connection = new DefaultConnectionContext("fuzz", new DuplexPipe(toServer.Reader, fromServer.Writer), new DuplexPipe(fromServer.Reader, toServer.Writer))
        {
            RemoteEndPoint = _client.ToIPEndPoint(),
            LocalEndPoint = _local.ToIPEndPoint(),
        };
        var drain = DrainAsync(fromServer.Reader);
        var served = _tcp.OnConnectedAsync(connection);
        if (!served.Wait(Deadline))
        {
            throw new FuzzFinding($"stun: the TCP connection did not end within {Deadline.TotalSeconds} s of its input ending");
        }

        served.GetAwaiter().GetResult();
        if (!drain.Wait(Deadline))
        {
            throw new FuzzFinding("stun: the TCP connection's output was never completed");
        }
    }

    private static async Task DrainAsync(PipeReader reader)
    {
        while (true)
        {
            var result = await reader.ReadAsync();
            if (Trace)
            {
                for (var rest = result.Buffer.ToArray().AsMemory(); rest.Length >= StunConstants.HeaderLength;)
                {
                    var length = StunConstants.HeaderLength + BinaryPrimitives.ReadUInt16BigEndian(rest.Span[2..]);
                    Console.Error.WriteLine($"tcp -> {Describe(rest.Span[..Math.Min(length, rest.Length)])}");
                    rest = rest[Math.Min(length, rest.Length)..];
                }
            }

            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                await reader.CompleteAsync();
                return;
            }
        }
    }

    /// <summary>
    /// Rewrites a message as the known user would have sent it: a fresh nonce in place of one of the server's
    /// form, then each MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT recomputed over what
    /// precedes it, with the header length as RFC 8489 §14.5/§14.6/§14.7 define it. Leaves anything that is not
    /// a well-formed attribute list as it is.
    /// </summary>
    private void Sign(Span<byte> message)
    {
        if (message.Length < StunConstants.HeaderLength)
        {
            return;
        }

        Span<byte> nonce = stackalloc byte[TurnNonceService.MaxLength];
        _nonces.Write(_client, nonce);
        var sha256 = false;
        var offset = StunConstants.HeaderLength;
        while (offset + 4 <= message.Length)
        {
            var type = BinaryPrimitives.ReadUInt16BigEndian(message[offset..]);
            var length = BinaryPrimitives.ReadUInt16BigEndian(message[(offset + 2)..]);
            var value = offset + 4;
            if (value + length > message.Length || offset + 4 > message.Length)
            {
                return;
            }

            var end = value + ((length + 3) & ~3);
            var body = message.Slice(value, length);
            switch ((StunAttributeType)type)
            {
                case StunAttributeType.Nonce when length == nonce.Length && body.StartsWith(TurnNonceService.Cookie):
                    nonce.CopyTo(body);
                    break;
                case StunAttributeType.PasswordAlgorithm when length >= 2:
                    sha256 = BinaryPrimitives.ReadUInt16BigEndian(body) == (ushort)StunPasswordAlgorithm.Sha256;
                    break;
                case StunAttributeType.MessageIntegrity when length == HMACSHA1.HashSizeInBytes:
                    {
                        var saved = SetLength(message, end);
#pragma warning disable CA5350 // MESSAGE-INTEGRITY is HMAC-SHA1 by definition (RFC 8489 §14.5)
                        HMACSHA1.HashData(sha256 ? _sha256Key : _md5Key, message[..offset], body);
#pragma warning restore CA5350
                        SetLength(message, saved);
                        break;
                    }

                case StunAttributeType.MessageIntegritySha256 when length is >= 16 and <= 32:
                    {
                        Span<byte> mac = stackalloc byte[HMACSHA256.HashSizeInBytes];
                        var saved = SetLength(message, end);
                        HMACSHA256.HashData(sha256 ? _sha256Key : _md5Key, message[..offset], mac);
                        SetLength(message, saved);
                        mac[..length].CopyTo(body);
                        break;
                    }

                case StunAttributeType.Fingerprint when length == 4:
                    {
                        var saved = SetLength(message, end);
                        BinaryPrimitives.WriteUInt32BigEndian(body, Crc32.HashToUInt32(message[..offset]) ^ 0x5354554E);
                        SetLength(message, saved);
                        break;
                    }
            }

            offset = end;
        }
    }

    /// <summary>Sets the header's length field so the message ends at <paramref name="end"/>; returns the end it had.</summary>
    private static int SetLength(Span<byte> message, int end)
    {
        var saved = BinaryPrimitives.ReadUInt16BigEndian(message[2..]) + StunConstants.HeaderLength;
        BinaryPrimitives.WriteUInt16BigEndian(message[2..], (ushort)(end - StunConstants.HeaderLength));
        return saved;
    }

    public void Dispose()
    {
        _relay.Dispose();
        _clientSocket.Dispose();
        _provider.DisposeAsync().AsTask().GetAwaiter().GetResult();
        try
        {
            Directory.Delete(_dataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }
}
