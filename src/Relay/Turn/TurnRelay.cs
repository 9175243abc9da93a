using System.Collections.Concurrent;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Net;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;
using Relay.Server.StunTurn;
using Relay.Server.Transport.Linux;

namespace Relay.Server.Turn;

/// <summary>Where a TURN message arrived, and how to reach its sender again.</summary>
/// <param name="Client">The client's transport address as the server sees it.</param>
/// <param name="Server">The server's transport address the message reached.</param>
/// <param name="Transport">UDP, TCP or TLS.</param>
/// <param name="UdpSocket">For UDP: the listening socket that received the message.</param>
/// <param name="Stream">For TCP and TLS: the connection's output.</param>
internal readonly record struct TurnContext(StunAddress Client, StunAddress Server, StunTransport Transport, Socket? UdpSocket, StreamClientSink? Stream)
{
    public TurnFiveTuple FiveTuple => new(Client, Server, Transport);
}

/// <summary>
/// The TURN relay (RFC 8656): allocations keyed by 5-tuple, their relay sockets on epoll loops, and the
/// two data paths. Requests are handled in TurnRelay.Requests.cs.
/// </summary>
internal sealed partial class TurnRelay : IHostedService, IDisposable
{
    // RFC 8656 §9 and §12: fixed lifetimes.
    public const int PermissionLifetimeSeconds = 300;
    public const int ChannelLifetimeSeconds = 600;

    // RFC 8656 §12: an expired channel number and peer stay unusable for 5 more minutes.
    private const long ChannelQuarantineMs = 300_000;

    private const int RelayBatchSize = 16;
    private const long ReservationLifetimeMs = 30_000;
    private const int MaxRelayDatagram = 65535 - 8 - 20;

    private readonly TurnOptions _options;
    private readonly StunOptions _stun;
    private readonly ILogger<TurnRelay> _logger;
    private readonly ConcurrentDictionary<TurnFiveTuple, TurnAllocation> _allocations = new();
    private readonly ConcurrentDictionary<ulong, Reservation> _reservations = new();
    private readonly Dictionary<string, int> _allocationsPerUser = new(StringComparer.Ordinal);
    private readonly object _quotaGate = new();
    private readonly StunReaderLimits _limits;
    private readonly byte[] _software;
    private readonly byte[] _realm;
    private RelayIoLoop[] _loops = [];
    private int _nextLoop;
    private Timer? _sweepTimer;
    private long _reservedAllocations;

    public TurnRelay(IOptions<TurnOptions> options, IOptions<StunOptions> stun, TurnMetrics metrics, TurnCredentialStore credentials, TurnNonceService nonces, ILogger<TurnRelay> logger)
    {
        _options = options.Value;
        _stun = stun.Value;
        _logger = logger;
        Metrics = metrics;
        Credentials = credentials;
        Nonces = nonces;
        // One bound for every STUN message, Send indications included: Relay:Stun:MaxMessageSize (4 KiB
        // by default, room for any MTU-sized payload). Bulk data belongs in ChannelData anyway.
        _limits = StunReaderLimits.Default with { MaxMessageSize = _stun.MaxMessageSize };
        _software = System.Text.Encoding.UTF8.GetBytes(_stun.Software ?? string.Empty);
        _realm = System.Text.Encoding.UTF8.GetBytes(_options.Realm);
        (RelayIPv4, RelayIPv6) = ResolveRelayAddresses(_options, _stun);
        AdvertisedIPv4 = RelayIPv4;
        if (_options.ExternalAddress is { Length: > 0 } external && IPAddress.TryParse(external, out var externalAddress) && externalAddress.AddressFamily == AddressFamily.InterNetwork)
        {
            AdvertisedIPv4 = externalAddress;
        }

        PeerPolicy = new TurnPeerPolicy(_options, ServerAddresses());
    }

    public TurnMetrics Metrics { get; }

    public TurnCredentialStore Credentials { get; }

    public TurnNonceService Nonces { get; }

    public TurnPeerPolicy PeerPolicy { get; }

    public IPAddress? RelayIPv4 { get; }

    public IPAddress? RelayIPv6 { get; }

    public IPAddress? AdvertisedIPv4 { get; }

    public bool Enabled => _options.Enabled;

    /// <summary>ChannelData framing limits, with the RFC 5766 channel range when configured.</summary>
    public ChannelDataLimits ChannelLimits => ChannelDataLimits.Default with { AcceptRfc5766Channels = _options.AcceptRfc5766ChannelNumbers };

    public int AllocationCount => _allocations.Count;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (!_options.Enabled)
        {
            return Task.CompletedTask;
        }

        if (!LinuxUdp.IsSupported)
        {
            throw new PlatformNotSupportedException("The TURN relay needs Linux (epoll, recvmmsg); set Relay:Turn:Enabled=false elsewhere.");
        }

        _loops = Enumerable.Range(0, Math.Max(1, Environment.ProcessorCount))
            .Select(i => new RelayIoLoop(this, i, RelayBatchSize, MaxRelayDatagram))
            .ToArray();
        _sweepTimer = new Timer(static state => ((TurnRelay)state!).Sweep(), this, 1000, 1000);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        _sweepTimer?.Dispose();
        _sweepTimer = null;
        foreach (var (_, allocation) in _allocations)
        {
            Delete(allocation);
        }

        foreach (var token in _reservations.Keys)
        {
            TakeReservation(token)?.Dispose();
        }

        foreach (var loop in _loops)
        {
            loop.Dispose();
        }

        _loops = [];
    }

    /// <summary>The allocation of a 5-tuple, if any.</summary>
    public TurnAllocation? Find(in TurnFiveTuple fiveTuple) => _allocations.TryGetValue(fiveTuple, out var allocation) ? allocation : null;

    /// <summary>A TCP/TLS connection ended: its allocation goes with it (RFC 8656 §3.1).</summary>
    public void OnConnectionClosed(in TurnContext context)
    {
        if (Find(context.FiveTuple) is { } allocation)
        {
            Delete(allocation);
        }
    }

    /// <summary>
    /// ChannelData from a client (RFC 8656 §12.6): relayed to the bound peer as a UDP datagram, or
    /// silently discarded when the 5-tuple has no allocation or the channel is not bound.
    /// </summary>
    public void HandleChannelData(ushort channel, ReadOnlySpan<byte> data, in TurnContext context)
    {
        if (!_allocations.TryGetValue(context.FiveTuple, out var allocation))
        {
            Metrics.Drop(TurnDropReason.NoAllocation);
            return;
        }

        var nowMs = Environment.TickCount64;
        if (!allocation.TryGetChannelPeer(channel, nowMs, out var peer))
        {
            Metrics.Drop(TurnDropReason.NoChannel);
            return;
        }

        SendToPeer(allocation, data, peer, nowMs);
    }

    /// <summary>Called on a relay loop thread for each datagram a peer sent to a relayed address.</summary>
    /// <param name="allocation">Whose relay socket received it.</param>
    /// <param name="slot">The receive slot: <see cref="RelayIoLoop.Headroom"/> free bytes, the datagram, and room for padding.</param>
    /// <param name="length">Datagram length.</param>
    /// <param name="peer">Its source.</param>
    /// <param name="nowMs">The loop's clock for this batch.</param>
    public void OnPeerDatagram(TurnAllocation allocation, Span<byte> slot, int length, in StunAddress peer, long nowMs)
    {
        if (TryFrame(allocation, slot, length, peer, nowMs, out var start, out var frameLength))
        {
            CountSent(allocation.Sink.TrySend(slot.Slice(start, frameLength)), allocation.Sink, length);
        }
    }

    /// <summary>
    /// Turns a datagram from a peer into what the client receives, in place: ChannelData when the peer
    /// has a channel (RFC 8656 §12.6; padded on streams, §12.5), else a Data indication (§11.3). False,
    /// counted, when the peer has no permission or the allocation is over its bandwidth.
    /// </summary>
    /// <param name="start">Where the frame starts in <paramref name="slot"/>.</param>
    /// <param name="frameLength">The frame's length.</param>
    public bool TryFrame(TurnAllocation allocation, Span<byte> slot, int length, in StunAddress peer, long nowMs, out int start, out int frameLength)
    {
        start = frameLength = 0;

        // RFC 8656 §11.3: data from a peer without a permission is discarded.
        if (!allocation.HasPermission(peer, nowMs))
        {
            Metrics.Drop(TurnDropReason.NoPermission);
            return false;
        }

        if (!allocation.TryConsumeBandwidth(length, nowMs, _options.MaxBytesPerSecondPerAllocation))
        {
            Metrics.Drop(TurnDropReason.Bandwidth);
            return false;
        }

        var channel = allocation.FindChannel(peer, nowMs);
        if (channel != 0)
        {
            start = RelayIoLoop.Headroom - TurnChannel.HeaderLength;
            ChannelDataWriter.WriteHeader(slot[start..], channel, length);
            frameLength = ChannelDataWriter.GetLength(length, allocation.Sink.IsStream);
            slot.Slice(RelayIoLoop.Headroom + length, frameLength - TurnChannel.HeaderLength - length).Clear();
            return true;
        }

        var prefix = StunConstants.HeaderLength + StunConstants.AttributeHeaderLength + 4 + peer.AddressLength + StunConstants.AttributeHeaderLength;
        start = RelayIoLoop.Headroom - prefix;
        var writer = new StunMessageWriter(slot[start..], StunHeader.ComposeType(StunMethod.Data, StunClass.Indication), StunTransactionId.NewRandom());
        writer.WriteXorAddress(StunAttributeType.XorPeerAddress, peer);
        writer.BeginAttribute((ushort)StunAttributeType.Data, length);
        frameLength = writer.Length;
        return true;
    }

    /// <summary>Counts one frame toward the client as relayed, or as shed and why.</summary>
    public void CountSent(bool sent, TurnClientSink sink, int payloadLength)
    {
        if (sent)
        {
            Metrics.Relayed(toPeer: false, payloadLength);
        }
        else
        {
            Metrics.Drop(sink.IsStream ? TurnDropReason.ClientBackpressure : TurnDropReason.SendFailed);
        }
    }

    public void OnLoopFailed(Exception exception) => LogLoopFailed(exception);

    private void SendToPeer(TurnAllocation allocation, ReadOnlySpan<byte> data, in StunAddress peer, long nowMs)
    {
        if (!allocation.TryConsumeBandwidth(data.Length, nowMs, _options.MaxBytesPerSecondPerAllocation))
        {
            Metrics.Drop(TurnDropReason.Bandwidth);
            return;
        }

        Span<byte> address = stackalloc byte[LinuxEpoll.SockaddrIn6Length];
        var socket = allocation.SocketFor(peer.Family);
        var addressLength = LinuxEpoll.WriteSockaddr(peer, socket.AddressFamily, address);
        if (!LinuxEpoll.TrySendTo(socket.SafeHandle, data, address[..addressLength]))
        {
            Metrics.Drop(TurnDropReason.SendFailed);
            return;
        }

        Metrics.Relayed(toPeer: true, data.Length);
    }

    private void Delete(TurnAllocation allocation)
    {
        if (!allocation.TryClose())
        {
            return;
        }

        _allocations.TryRemove(new KeyValuePair<TurnFiveTuple, TurnAllocation>(allocation.FiveTuple, allocation));
        ReleaseQuota(allocation.Username);
        Metrics.AllocationDeleted();
        if (allocation.IsTcpRelay)
        {
            allocation.RelaySocket.Dispose();
            SweepTcpConnections(Environment.TickCount64);
        }
        else if (allocation.Loop is { } loop)
        {
            loop.Remove(allocation);
        }
        else
        {
            allocation.RelaySocket.Dispose();
            allocation.SecondarySocket?.Dispose();
        }

        LogAllocationDeleted(allocation.FiveTuple.Client, allocation.RelayedAddress, allocation.Username);
    }

    private void Sweep()
    {
        try
        {
            var nowMs = Environment.TickCount64;
            foreach (var (token, reservation) in _reservations)
            {
                if (reservation.ExpiresAtMs <= nowMs && _reservations.TryRemove(token, out _))
                {
                    reservation.Socket.Dispose();
                }
            }

            SweepTcpConnections(nowMs);
            // Enumerating the dictionary itself takes no locks and copies nothing; .Values would lock
            // every bucket and copy all allocations once a second.
            foreach (var (_, allocation) in _allocations)
            {
                if (allocation.ExpiresAtMs <= nowMs)
                {
                    Delete(allocation);
                }
                else
                {
                    allocation.Sweep(nowMs, ChannelQuarantineMs);
                }
            }
        }
        catch (Exception exception)
        {
            LogSweepFailed(exception);
        }
    }

    private TurnLimit? TryReserveQuota(string username)
    {
        lock (_quotaGate)
        {
            if (_reservedAllocations >= _options.MaxAllocations)
            {
                return TurnLimit.Allocations;
            }

            _allocationsPerUser.TryGetValue(username, out var count);
            if (count >= _options.MaxAllocationsPerUser)
            {
                return TurnLimit.AllocationsPerUser;
            }

            _allocationsPerUser[username] = count + 1;
            _reservedAllocations++;
            return null;
        }
    }

    private void ReleaseQuota(string username)
    {
        lock (_quotaGate)
        {
            _reservedAllocations--;
            if (_allocationsPerUser.TryGetValue(username, out var count))
            {
                if (count <= 1)
                {
                    _allocationsPerUser.Remove(username);
                }
                else
                {
                    _allocationsPerUser[username] = count - 1;
                }
            }
        }
    }

    private RelayIoLoop NextLoop() => _loops[(int)((uint)Interlocked.Increment(ref _nextLoop) % (uint)_loops.Length)];

    /// <summary>
    /// Binds a relay socket on a random port of the configured range (RFC 8656 §7.2 asks for
    /// unpredictable ports); <paramref name="evenPort"/> for EVEN-PORT, and with
    /// <paramref name="reserveNext"/> the odd port above it too, into <paramref name="reserved"/>.
    /// Null when no port (pair) is free.
    /// </summary>
    private Socket? BindRelaySocket(IPAddress address, bool evenPort, bool reserveNext, out Socket? reserved)
    {
        reserved = null;
        var min = _options.RelayPortMin;
        var max = _options.RelayPortMax;
        for (var attempt = 0; attempt < 64; attempt++)
        {
            var port = Random.Shared.Next(min, max + 1);
            if (evenPort)
            {
                port &= ~1;
                if (port < min)
                {
                    port += 2;
                }

                if (port > max || (reserveNext && port + 1 > max))
                {
                    continue;
                }
            }

            var socket = TryBind(address, port);
            if (socket is null)
            {
                continue;
            }

            if (reserveNext)
            {
                reserved = TryBind(address, port + 1);
                if (reserved is null)
                {
                    socket.Dispose();
                    continue;
                }
            }

            return socket;
        }

        return null;
    }

    private Socket? TryBind(IPAddress address, int port)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            if (e.SocketErrorCode != SocketError.AddressAlreadyInUse)
            {
                // Not a busy port but an unusable address (e.g. Relay:Turn:RelayAddresses names one this
                // host does not have): the client gets 508 and the operator a line naming the key.
                LogRelayBindFailed(new IPEndPoint(address, port), e.SocketErrorCode);
            }

            return null;
        }
    }

    /// <summary>Holds a reserved port for about 30 s (RFC 8656 §7.2); returns the token naming it.</summary>
    private ulong AddReservation(Socket socket)
    {
        while (true)
        {
            var token = BitConverter.ToUInt64(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
            if (token != 0 && _reservations.TryAdd(token, new Reservation(socket, Environment.TickCount64 + ReservationLifetimeMs)))
            {
                Metrics.Reservation(redeemed: false);
                return token;
            }
        }
    }

    private Socket? TakeReservation(ulong token) =>
        _reservations.TryRemove(token, out var reservation) ? reservation.Socket : null;

    private readonly record struct Reservation(Socket Socket, long ExpiresAtMs);

    private IEnumerable<IPAddress> ServerAddresses()
    {
        var addresses = new List<IPAddress>();
        try
        {
            foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                addresses.AddRange(nic.GetIPProperties().UnicastAddresses.Select(static u => u.Address));
            }
        }
        catch (NetworkInformationException)
        {
            // Without the interface list the default deny ranges still cover the usual cases.
        }

        addresses.AddRange(new[] { RelayIPv4, RelayIPv6, AdvertisedIPv4 }.OfType<IPAddress>());
        return addresses.Distinct();
    }

    /// <summary>
    /// The relay address of each family: configured, else the specific STUN listen address, else the
    /// host's first non-loopback address, else loopback (a laptop with no network still works).
    /// </summary>
    private static (IPAddress? V4, IPAddress? V6) ResolveRelayAddresses(TurnOptions options, StunOptions stun)
    {
        IReadOnlyList<IPAddress> configured = ListenAddresses.Parse(options.RelayAddresses) ?? [];
        var listen = (ListenAddresses.Parse(stun.ListenAddresses) ?? []).Where(static a => !a.Equals(IPAddress.Any) && !a.Equals(IPAddress.IPv6Any)).ToArray();
        IPAddress[] host = [];
        try
        {
            host = NetworkInterface.GetAllNetworkInterfaces()
                .Where(static nic => nic.OperationalStatus == OperationalStatus.Up)
                .SelectMany(static nic => nic.GetIPProperties().UnicastAddresses.Select(static u => u.Address))
                .Where(static a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal)
                .ToArray();
        }
        catch (NetworkInformationException)
        {
        }

        IPAddress? Pick(AddressFamily family, IPAddress loopback)
        {
            if (configured.Count > 0)
            {
                return configured.FirstOrDefault(a => a.AddressFamily == family);
            }

            return listen.FirstOrDefault(a => a.AddressFamily == family)
                ?? (listen.Length > 0 ? null : host.FirstOrDefault(a => a.AddressFamily == family))
                ?? (listen.Length > 0 || !Socket.OSSupportsIPv6 && family == AddressFamily.InterNetworkV6 ? null : loopback);
        }

        return (Pick(AddressFamily.InterNetwork, IPAddress.Loopback), Pick(AddressFamily.InterNetworkV6, IPAddress.IPv6Loopback));
    }

    [LoggerMessage(EventId = 4008, Level = LogLevel.Error, Message = "Cannot bind a relay socket on {Endpoint}: {Error} (Relay:Turn:RelayAddresses, RelayPortMin/RelayPortMax)")]
    private partial void LogRelayBindFailed(IPEndPoint endpoint, SocketError error);

    [LoggerMessage(EventId = 4001, Level = LogLevel.Critical, Message = "A TURN relay loop failed; allocations on it no longer receive from peers")]
    private partial void LogLoopFailed(Exception exception);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Error, Message = "TURN allocation sweep failed")]
    private partial void LogSweepFailed(Exception exception);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug, Message = "TURN allocation for {Client} relayed at {Relayed}, IPv6 half {Additional} (user {User})")]
    private partial void LogAllocationCreated(StunAddress client, StunAddress relayed, string additional, string user);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Debug, Message = "TURN allocation for {Client} at {Relayed} (user {User}) deleted")]
    private partial void LogAllocationDeleted(StunAddress client, StunAddress relayed, string user);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Warning, Message = "TURN {Limit} limit hit by {Client} (user {User}); answered {Code}")]
    private partial void LogLimitHit(TurnLimit limit, StunAddress client, string user, int code);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Information, Message = "TURN peer {Peer} refused for {Client} by the peer policy (Relay:Turn:AllowedPeers/DeniedPeers/AllowLoopbackPeers)")]
    private partial void LogPeerDenied(StunAddress peer, StunAddress client);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Debug, Message = "TURN {Method} from {Client} refused: {Code}")]
    private partial void LogRefused(string method, StunAddress client, int code);
}
