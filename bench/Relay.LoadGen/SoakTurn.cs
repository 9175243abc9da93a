using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace Relay.LoadGen;

/// <summary>
/// The soak's TURN clients (RFC 8656 over UDP, long-term credentials): each slot makes an allocation from a
/// fresh socket, installs a permission and a channel to an echo peer, sends one ChannelData a second and
/// waits for its echo, refreshes the allocation and the permission every minute (RFC 8656 §7, §9: a
/// permission lasts 300 s), and after 1..5 minutes releases it (Refresh with LIFETIME 0) and starts again.
/// So the number of live allocations stays about the same while each one comes and goes. Simple and
/// sequential per slot: the rate is a few messages a second per allocation, not a throughput test (that
/// is the <c>turn</c> command).
/// </summary>
internal sealed class SoakTurn(SoakOptions o, IPEndPoint[] peers)
{
    private const ushort Channel = 0x4000;
    private const int PayloadLength = 64;
    private static readonly double[] Retransmissions = [0.5, 1, 2];
    private static readonly TimeSpan RefreshEvery = TimeSpan.FromSeconds(60);

    private long _live;

    public long Allocated;
    public long AllocateFailed;
    public long Refreshed;
    public long RefreshFailed;
    public long Released;
    public long Sent;
    public long Echoed;
    public long Lost;
    public string? FirstError;

    /// <summary>Allocations up now.</summary>
    public long Live => Interlocked.Read(ref _live);

    public Task RunAsync(CancellationToken churn) =>
        Task.WhenAll(Enumerable.Range(0, o.TurnAllocations).Select(i => Task.Run(() => SlotAsync(i, churn), CancellationToken.None)));

    private async Task SlotAsync(int slot, CancellationToken churn)
    {
        var peer = peers[slot % peers.Length];
        try
        {
            // Spread the first allocations over a minute, so the slots do not all refresh in step.
            await Task.Delay(TimeSpan.FromSeconds(Random.Shared.NextDouble() * 60), churn);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        while (!churn.IsCancellationRequested)
        {
            using var client = new Client(o, peer);
            var up = false;
            try
            {
                if (!await client.RequestAsync(TurnWire.AllocateRequest, this))
                {
                    Interlocked.Increment(ref AllocateFailed);
                    await Task.Delay(TimeSpan.FromSeconds(5), churn);
                    continue;
                }

                up = true;
                Interlocked.Increment(ref Allocated);
                Interlocked.Increment(ref _live);
                if (!await client.RequestAsync(TurnWire.CreatePermissionRequest, this) || !await client.RequestAsync(TurnWire.ChannelBindRequest, this))
                {
                    Interlocked.Increment(ref AllocateFailed);
                    continue;
                }

                var end = Stopwatch.GetTimestamp() + (long)((60 + (Random.Shared.NextDouble() * 240)) * Stopwatch.Frequency);
                var nextRefresh = Stopwatch.GetTimestamp() + (long)(RefreshEvery.TotalSeconds * Stopwatch.Frequency);
                while (!churn.IsCancellationRequested && Stopwatch.GetTimestamp() < end)
                {
                    Interlocked.Increment(ref Sent);
                    if (await client.EchoAsync())
                    {
                        Interlocked.Increment(ref Echoed);
                    }
                    else
                    {
                        Interlocked.Increment(ref Lost);
                    }

                    if (Stopwatch.GetTimestamp() >= nextRefresh)
                    {
                        var ok = await client.RequestAsync(TurnWire.RefreshRequest, this) && await client.RequestAsync(TurnWire.CreatePermissionRequest, this);
                        if (ok)
                        {
                            Interlocked.Increment(ref Refreshed);
                        }
                        else
                        {
                            Interlocked.Increment(ref RefreshFailed);
                        }

                        nextRefresh += (long)(RefreshEvery.TotalSeconds * Stopwatch.Frequency);
                    }

                    await Task.Delay(TimeSpan.FromSeconds(0.8 + (Random.Shared.NextDouble() * 0.4)), churn);
                }
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                if (up)
                {
                    // RFC 8656 §7: a Refresh with LIFETIME 0 deletes the allocation at once.
                    client.Lifetime = 0;
                    if (await client.RequestAsync(TurnWire.RefreshRequest, this))
                    {
                        Interlocked.Increment(ref Released);
                    }

                    Interlocked.Decrement(ref _live);
                }
            }
        }
    }

    private void Failed(string what) => Interlocked.CompareExchange(ref FirstError, what, null);

    /// <summary>One client socket and its allocation's state: realm, nonce, key.</summary>
    private sealed class Client : IDisposable
    {
        private readonly Socket _socket;
        private readonly SoakOptions _o;
        private readonly IPEndPoint _peer;
        private readonly byte[] _send = new byte[1024];
        private readonly byte[] _receive = new byte[2048];
        private readonly byte[] _transactionId = new byte[StunWire.TransactionIdLength];
        private byte[] _realm = [];
        private byte[] _nonce = [];
        private byte[] _key = [];
        private long _seq;

        public Client(SoakOptions o, IPEndPoint peer)
        {
            _o = o;
            _peer = peer;
            _socket = new Socket(o.Turn!.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            _socket.Bind(new IPEndPoint(o.Turn.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Loopback : IPAddress.Loopback, 0));
            _socket.Connect(o.Turn);
        }

        public uint Lifetime { get; set; } = 600;

        public void Dispose() => _socket.Dispose();

        /// <summary>
        /// One transaction: retransmitted at 0.5, 1, 2 s (RFC 8489 §6.2.1, shortened), answered 401/438 by
        /// taking the realm and nonce and sending again with credentials (§9.2.4). True on a success response.
        /// </summary>
        public async Task<bool> RequestAsync(ushort method, SoakTurn owner)
        {
            for (var round = 0; round < 3; round++)
            {
                RandomNumberGenerator.Fill(_transactionId);
                var length = Build(method);
                var answer = await TransactAsync(length);
                if (answer < 0)
                {
                    owner.Failed($"{MethodName(method)}: no answer");
                    return false;
                }

                var response = _receive.AsSpan(0, answer);
                _ = TurnWire.TryReadHeader(response, out var type);
                if (TurnWire.IsSuccess(type))
                {
                    return true;
                }

                var code = TurnWire.ReadErrorCode(response);
                if (code is 401 or 438 && TurnWire.TryFind(response, TurnWire.Nonce, out var nonce, out _))
                {
                    if (TurnWire.TryFind(response, TurnWire.Realm, out var realm, out _) && !realm.SequenceEqual(_realm))
                    {
                        _realm = realm.ToArray();
                        _key = TurnWire.LongTermKey(_o.TurnUser, System.Text.Encoding.UTF8.GetString(_realm), _o.TurnPassword);
                    }

                    _nonce = nonce.ToArray();
                    continue;
                }

                owner.Failed($"{MethodName(method)}: error {code}");
                return false;
            }

            owner.Failed($"{MethodName(method)}: still 401/438 after new credentials");
            return false;
        }

        /// <summary>One ChannelData (RFC 8656 §12.4) to the peer and its echo back within 2 s.</summary>
        public async Task<bool> EchoAsync()
        {
            var seq = ++_seq;
            BinaryPrimitives.WriteUInt16BigEndian(_send, Channel);
            BinaryPrimitives.WriteUInt16BigEndian(_send.AsSpan(2), PayloadLength);
            _send.AsSpan(4, PayloadLength).Clear();
            BinaryPrimitives.WriteInt64BigEndian(_send.AsSpan(4), seq);
            await _socket.SendAsync(_send.AsMemory(0, 4 + PayloadLength), SocketFlags.None);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            try
            {
                while (true)
                {
                    var n = await _socket.ReceiveAsync(_receive, SocketFlags.None, timeout.Token);
                    if (n >= 12 && BinaryPrimitives.ReadUInt16BigEndian(_receive) == Channel && BinaryPrimitives.ReadInt64BigEndian(_receive.AsSpan(4)) == seq)
                    {
                        return true;
                    }
                }
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            catch (SocketException)
            {
                return false;
            }
        }

        private async Task<int> TransactAsync(int length)
        {
            foreach (var wait in Retransmissions)
            {
                try
                {
                    await _socket.SendAsync(_send.AsMemory(0, length), SocketFlags.None);
                    using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(wait));
                    while (true)
                    {
                        var n = await _socket.ReceiveAsync(_receive, SocketFlags.None, timeout.Token);
                        // ChannelData (a late echo) and other transactions' answers are skipped.
                        if (TurnWire.TryReadHeader(_receive.AsSpan(0, n), out _) && _receive.AsSpan(StunWire.TransactionIdOffset, StunWire.TransactionIdLength).SequenceEqual(_transactionId))
                        {
                            return n;
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                }
                catch (SocketException)
                {
                    // ICMP port unreachable from an earlier datagram: try again.
                }
            }

            return -1;
        }

        private int Build(ushort method)
        {
            var b = new TurnWire.Builder(_send, method, _transactionId);
            switch (method)
            {
                case TurnWire.AllocateRequest:
                    b.AddRequestedTransportUdp();
                    b.AddUInt32(TurnWire.Lifetime, Lifetime);
                    break;
                case TurnWire.RefreshRequest:
                    b.AddUInt32(TurnWire.Lifetime, Lifetime);
                    break;
                case TurnWire.CreatePermissionRequest:
                    b.AddXorAddress(TurnWire.XorPeerAddress, _peer);
                    break;
                default:
                    b.AddChannelNumber(Channel);
                    b.AddXorAddress(TurnWire.XorPeerAddress, _peer);
                    break;
            }

            if (_nonce.Length == 0)
            {
                // The first request goes without credentials; the 401 names the realm and nonce.
                return b.Finish();
            }

            b.Add(TurnWire.Username, System.Text.Encoding.UTF8.GetBytes(_o.TurnUser));
            b.Add(TurnWire.Realm, _realm);
            b.Add(TurnWire.Nonce, _nonce);
            return b.FinishWithIntegrity(_key);
        }

        private static string MethodName(ushort method) => method switch
        {
            TurnWire.AllocateRequest => "Allocate",
            TurnWire.RefreshRequest => "Refresh",
            TurnWire.CreatePermissionRequest => "CreatePermission",
            _ => "ChannelBind",
        };
    }
}
