using System.Buffers.Binary;
using System.Net.Sockets;
using System.Net;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Rendezvous.Stun;
using Relay.Server.Hosting;
using Relay.Server.Primitives;
using Relay.Server.Transport.Linux;
using Relay.Server.Turn;

namespace Relay.Server.StunTurn;

/// <summary>
/// STUN over UDP (RFC 8489 §6.2.1). Every listen endpoint gets a group of SO_REUSEPORT sockets, one
/// receive loop each, so the kernel spreads sources over the CPUs. Sockets are bound inside
/// <see cref="StartAsync"/>: a port conflict fails startup instead of leaving a healthy-looking host
/// with a dead listener.
/// </summary>
internal sealed partial class StunTurnUdpListener : IHostedService, IAsyncDisposable
{
    // Linux's SOL_SOCKET and SO_REUSEPORT: not in SocketOptionName, so set raw.
    private const int SolSocket = 1;
    private const int SoReusePort = 15;
    private const int ReceiveBufferBytes = 4 * 1024 * 1024;

    private readonly StunBindingService _service;
    private readonly TurnRelay? _turn;
    private readonly StunMetrics _metrics;
    private readonly SourceRateLimiter? _rateLimiter;
    private readonly StunOptions _options;
    private readonly ILogger<StunTurnUdpListener> _logger;
    private readonly List<EndpointGroup> _groups = [];
    private readonly List<Task> _loops = [];
    private readonly LogThrottle _rateLimitLog;
    private volatile bool _stopping;

    public StunTurnUdpListener(StunBindingService service, TurnRelay turn, StunMetrics metrics, IOptions<StunOptions> options, TimeProvider time, ILogger<StunTurnUdpListener> logger)
    {
        _service = service;
        _turn = turn.Enabled ? turn : null;
        _metrics = metrics;
        _options = options.Value;
        _logger = logger;

        // One warning per 10 s at most: the log must not become the amplifier.
        _rateLimitLog = new LogThrottle(1, TimeSpan.FromSeconds(10), time);
        var rate = _options.RateLimit;
        _rateLimiter = rate.Enabled ? new SourceRateLimiter(rate.RequestsPerSecond, rate.Burst, rate.MaxTrackedSources) : null;
    }

    /// <summary>Endpoints actually bound; for health output and tests.</summary>
    public IReadOnlyList<IPEndPoint> BoundEndpoints => _groups.Select(static g => g.Local.ToIPEndPoint()).ToArray();

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var loopsPerEndpoint = _options.UdpReceiveLoops == 0 ? Environment.ProcessorCount : _options.UdpReceiveLoops;
        foreach (var endpoint in ResolveEndpoints())
        {
            _groups.Add(EndpointGroup.Bind(endpoint, loopsPerEndpoint));
        }

        var batchSize = LinuxUdp.IsSupported ? _options.UdpBatchSize : 0;
        foreach (var group in _groups)
        {
            foreach (var socket in group.Sockets)
            {
                _loops.Add(batchSize > 0 ? StartBatchedThread(group, socket, batchSize) : Task.Run(() => ReceiveLoopAsync(group, socket), CancellationToken.None));
            }

            LogListening(group.Local.ToIPEndPoint(), group.Sockets.Length, batchSize > 0 ? $"recvmmsg/sendmmsg batches of {batchSize}" : "async receive");
        }

        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        // Batched threads notice the flag within one receive timeout; async loops end when their socket
        // closes. The batched threads hold a reference on their descriptor, so Dispose cannot pull it
        // from under a running recvmmsg.
        _stopping = true;
        foreach (var group in _groups)
        {
            group.Dispose();
        }

        await Task.WhenAll(_loops).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private Task StartBatchedThread(EndpointGroup group, Socket socket, int batchSize)
    {
        // The timeout bounds how long shutdown waits for a thread blocked in recvmmsg.
        socket.ReceiveTimeout = 250;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                BatchedReceiveLoop(group, socket, batchSize);
                done.SetResult();
            }
            catch (Exception e)
            {
                LogLoopFailed(group.Local.ToIPEndPoint(), e);
                done.SetException(e);
            }
        })
        {
            IsBackground = true,
            Name = $"stun-udp {group.Local}",
        };
        thread.Start();
        return done.Task;
    }

    public async ValueTask DisposeAsync()
    {
        // Reached without StopAsync when the host fails to start after we bound (e.g. Kestrel's port
        // is taken). Socket.Dispose waits for the batched threads to release their descriptors, so
        // they must be told to stop first or disposal never returns.
        _stopping = true;
        foreach (var group in _groups)
        {
            group.Dispose();
        }

        await Task.WhenAll(_loops).ConfigureAwait(false);
    }

    private List<IPEndPoint> ResolveEndpoints()
    {
        var endpoints = new List<IPEndPoint>();
        var rfc5780 = _service.BehaviorDiscoveryAddresses;
        if (rfc5780 is not null)
        {
            endpoints.AddRange(rfc5780.Endpoints.Select(static e => e.ToIPEndPoint()));
        }

        var addresses = ListenAddresses.Parse(_options.ListenAddresses) ?? [Socket.OSSupportsIPv6 ? IPAddress.IPv6Any : IPAddress.Any];
        foreach (var address in addresses)
        {
            var endpoint = new IPEndPoint(address, _options.Port);
            if (!endpoints.Contains(endpoint))
            {
                endpoints.Add(endpoint);
            }
        }

        return endpoints;
    }

    private async Task ReceiveLoopAsync(EndpointGroup group, Socket socket)
    {
        // Pinned once per loop: receives and sends never allocate or pin per packet.
        var buffer = GC.AllocateUninitializedArray<byte>(65536, pinned: true);
        var response = GC.AllocateUninitializedArray<byte>(_service.ResponseBufferSize, pinned: true);
        var remote = new SocketAddress(socket.AddressFamily);
        var redirected = new SocketAddress(socket.AddressFamily);
        while (true)
        {
            int received;
            try
            {
                received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, remote, CancellationToken.None).ConfigureAwait(false);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.OperationAborted or SocketError.Interrupted or SocketError.Shutdown)
            {
                return;
            }
            catch (SocketException e)
            {
                // ICMP errors from an earlier send (ECONNREFUSED and friends) surface here; they concern
                // one peer, not the socket.
                LogReceiveError(group.Local.ToIPEndPoint(), e.SocketErrorCode);
                continue;
            }

            var client = StunAddress.FromSocketAddress(remote);
            if (_rateLimiter is not null && IsRateLimited(buffer.AsSpan(0, received)) && !_rateLimiter.TryAcquire(client))
            {
                _metrics.Drop(StunTransport.Udp, StunDropReason.RateLimited);
                ReportRateLimited(client);
                continue;
            }

            var reply = Dispatch(buffer.AsSpan(0, received), new StunRequestContext(client, group.Local, StunTransport.Udp), group.Sockets[0], response);
            if (!reply.HasResponse)
            {
                continue;
            }

            var sender = reply.Source == StunResponseSource.Same ? socket : FindSocket(group.Local, reply.Source) ?? socket;
            var target = remote;
            if (reply.ResponsePort != 0)
            {
                // RFC 5780 §6.1: RESPONSE-PORT redirects to the same IP, another port; never another host.
                remote.Buffer.Span[..remote.Size].CopyTo(redirected.Buffer.Span);
                redirected.Size = remote.Size;
                System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(redirected.Buffer.Span[2..], reply.ResponsePort);
                target = redirected;
            }

            try
            {
                // UDP sends complete immediately or fail; the synchronous call avoids async machinery per packet.
                sender.SendTo(response.AsSpan(0, reply.Length), SocketFlags.None, target);
            }
            catch (SocketException)
            {
                _metrics.Drop(StunTransport.Udp, StunDropReason.SendFailed);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Datagrams are large enough for a whole relayed datagram when TURN is on (ChannelData and Send
    /// indications carry one), otherwise for the largest STUN message accepted.
    /// </summary>
    private int ReceiveSlotSize => _turn is null ? _service.Limits.MaxMessageSize : 65536;

    /// <summary>
    /// The reflection limit applies to what earns an answer: requests. ChannelData and indications are
    /// never answered, and counting a relay's data against 50 packets a second would break every call.
    /// </summary>
    private static bool IsRateLimited(ReadOnlySpan<byte> datagram) =>
        datagram.Length >= 2
        && !TurnChannel.LooksLikeChannelData(datagram[0])
        && StunHeader.GetClass(BinaryPrimitives.ReadUInt16BigEndian(datagram)) != StunClass.Indication;

    /// <summary>ChannelData and TURN methods go to the relay, Binding (and all of STUN when TURN is off) to the STUN service.</summary>
    /// <param name="datagram">What arrived.</param>
    /// <param name="context">From whom, on which endpoint.</param>
    /// <param name="clientSocket">
    /// The socket relayed data goes back to this client from: the first of the endpoint's SO_REUSEPORT
    /// group, whichever received this datagram, so the relay loop can send to all its clients in one call.
    /// </param>
    /// <param name="response">Where a STUN response is written.</param>
    /// <remarks>Internal rather than private: fuzz/Relay.Fuzz drives it without a socket.</remarks>
    internal StunReply Dispatch(ReadOnlySpan<byte> datagram, in StunRequestContext context, Socket clientSocket, Span<byte> response)
    {
        try
        {
            return DispatchCore(datagram, context, clientSocket, response);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A fault in handling one datagram must not take the socket's receive loop down with it:
            // that would leave a healthy-looking host with a dead listener.
            LogDispatchFailed(context.Client, e);
            return StunReply.None;
        }
    }

    private StunReply DispatchCore(ReadOnlySpan<byte> datagram, in StunRequestContext context, Socket clientSocket, Span<byte> response)
    {
        if (_turn is not null && datagram.Length > 0)
        {
            if (TurnChannel.LooksLikeChannelData(datagram[0]))
            {
                var turnContext = new TurnContext(context.Client, context.Local, StunTransport.Udp, clientSocket, null);
                if (ChannelDataReader.TryRead(datagram, _turn.ChannelLimits, out var channel, out var data, out _))
                {
                    _turn.HandleChannelData(channel, data, turnContext);
                }
                else
                {
                    // RFC 7983 puts any first byte 64-127 here, so most garbage lands in this branch.
                    _metrics.Drop(StunTransport.Udp, StunDropReason.NotStun);
                }

                return StunReply.None;
            }

            if (datagram.Length >= StunConstants.HeaderLength
                && StunHeader.GetMethod(BinaryPrimitives.ReadUInt16BigEndian(datagram)) != (ushort)StunMethod.Binding
                && BinaryPrimitives.ReadUInt32BigEndian(datagram[4..]) == StunConstants.MagicCookie)
            {
                var length = _turn.HandleMessage(datagram, new TurnContext(context.Client, context.Local, StunTransport.Udp, clientSocket, null), response);
                return length > 0 ? new StunReply(length, StunResponseSource.Same, 0) : StunReply.None;
            }
        }

        return _service.Handle(datagram, context, response);
    }

    private Socket? FindSocket(StunAddress local, StunResponseSource source)
    {
        var origin = _service.BehaviorDiscoveryAddresses?.Origin(local, source);
        foreach (var group in _groups)
        {
            if (origin is { } wanted && group.Local == wanted)
            {
                return group.Sockets[0];
            }
        }

        return null;
    }

    private void ReportRateLimited(StunAddress client)
    {
        if (_rateLimitLog.TryEnter(0, out var suppressed))
        {
            // This drop and those held back since the last line.
            LogRateLimited(client, suppressed + 1, _options.RateLimit.RequestsPerSecond);
        }
    }

    [LoggerMessage(EventId = 2001, Level = LogLevel.Information, Message = "STUN listening on udp/{Endpoint} ({Loops} receive loops, {Mode})")]
    private partial void LogListening(IPEndPoint endpoint, int loops, string mode);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Critical, Message = "STUN receive loop on udp/{Endpoint} failed; that socket no longer answers")]
    private partial void LogLoopFailed(IPEndPoint endpoint, Exception exception);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Error, Message = "Handling a datagram from {Client} failed; the listener carries on")]
    private partial void LogDispatchFailed(StunAddress client, Exception exception);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Debug, Message = "UDP receive on {Endpoint} reported {Error}")]
    private partial void LogReceiveError(IPEndPoint endpoint, SocketError error);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Warning, Message = "STUN rate limit hit (latest source {Client}): {Dropped} requests dropped since the last report; limit {Limit}/s per IP (Relay:Stun:RateLimit)")]
    private partial void LogRateLimited(StunAddress client, long dropped, int limit);

    /// <summary>The SO_REUSEPORT sockets bound to one local endpoint.</summary>
    private sealed class EndpointGroup : IDisposable
    {
        private EndpointGroup(StunAddress local, Socket[] sockets)
        {
            Local = local;
            Sockets = sockets;
        }

        public StunAddress Local { get; }

        public Socket[] Sockets { get; }

        public static EndpointGroup Bind(IPEndPoint endpoint, int count)
        {
            // SO_REUSEPORT would let us silently share a port with another process that also set it, so
            // first prove the port is free with a plain bind, then bind the group.
            using (var probe = Create(endpoint.AddressFamily, reusePort: false))
            {
                BindOrExplain(probe, endpoint);
            }

            var sockets = new Socket[count];
            try
            {
                for (var i = 0; i < count; i++)
                {
                    sockets[i] = Create(endpoint.AddressFamily, reusePort: count > 1);
                    BindOrExplain(sockets[i], endpoint);
                }
            }
            catch
            {
                foreach (var socket in sockets)
                {
                    socket?.Dispose();
                }

                throw;
            }

            var bound = (IPEndPoint)sockets[0].LocalEndPoint!;
            return new EndpointGroup(StunAddress.FromEndPoint(bound), sockets);
        }

        public void Dispose()
        {
            foreach (var socket in Sockets)
            {
                socket.Dispose();
            }
        }

        private static Socket Create(AddressFamily family, bool reusePort)
        {
            var socket = new Socket(family, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                if (family == AddressFamily.InterNetworkV6)
                {
                    // A wildcard IPv6 socket serves IPv4 too; replies report IPv4 clients as IPv4.
                    socket.DualMode = true;
                }

                if (reusePort && OperatingSystem.IsLinux())
                {
                    socket.SetRawSocketOption(SolSocket, SoReusePort, [1, 0, 0, 0]);
                }

                socket.ReceiveBufferSize = ReceiveBufferBytes;
                socket.SendBufferSize = ReceiveBufferBytes;
                return socket;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        private static void BindOrExplain(Socket socket, IPEndPoint endpoint)
        {
            try
            {
                socket.Bind(endpoint);
            }
            catch (SocketException e)
            {
                throw new IOException(e.SocketErrorCode == SocketError.AddressAlreadyInUse
                    ? $"Cannot listen on udp/{endpoint}: the port is already in use by another process (Relay:Stun:Port)."
                    : $"Cannot listen on udp/{endpoint}: {e.Message} (Relay:Stun:ListenAddresses / Relay:Stun:Port).", e);
            }
        }
    }
}
