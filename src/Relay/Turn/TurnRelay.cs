using System.IO.Pipelines;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Options;
using Relay.Protocol.Stun;
using Relay.Protocol.Turn;
using Relay.Rendezvous.Stun;
using Relay.Server.Primitives;
using Relay.Server.Transport.Linux;

namespace Relay.Server.Turn;

/// <summary>
/// The TURN relay (RFC 8656; RFC 6062 for TCP relays) as the STUN/TURN listeners call it and as the host
/// runs it. It composes the parts, each the owner of its own state: the allocation table, the port
/// binder, the authenticator and request handlers, the UDP data path on its epoll loops, and the TCP
/// relay. Starting it starts the loops and the once-a-second sweep; stopping it deletes every allocation.
/// </summary>
internal sealed class TurnRelay : IHostedService, IDisposable
{
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    private readonly TurnOptions _options;
    private readonly TurnMetrics _metrics;
    private readonly ILogger _logger;
    private readonly ILogger _loopLogger;
    private readonly RelayPortBinder _binder;
    private readonly TurnAllocationTable<TurnAllocation, Socket> _allocations;
    private readonly RelayIoLoopGroup _loops = new();
    private readonly TurnDataPath _dataPath;
    private readonly TurnTcpRelay _tcp;
    private readonly TurnMessageDispatcher _dispatcher;
    private readonly TimeProvider _time;
    private ITimer? _sweepTimer;

    public TurnRelay(IOptions<TurnOptions> options, IOptions<StunOptions> stun, TurnMetrics metrics, TurnCredentialStore credentials, TurnNonceService nonces, TimeProvider time, ILoggerFactory loggers)
    {
        _options = options.Value;
        var stunOptions = stun.Value;
        _metrics = metrics;
        _time = time;
        _logger = loggers.CreateLogger<TurnRelay>();
        _loopLogger = loggers.CreateLogger<RelayIoLoop>();
        _binder = new RelayPortBinder(_options, stunOptions, loggers.CreateLogger<RelayPortBinder>());
        _allocations = new TurnAllocationTable<TurnAllocation, Socket>(_options.MaxAllocations, _options.MaxAllocationsPerUser, _options.MaxAllocationsPerIp, OnAllocationDeleted);
        _dataPath = new TurnDataPath(_options, _allocations, metrics, time);
        var events = new TurnEventLog(time, _logger);
        _tcp = new TurnTcpRelay(_options, metrics, time, events);

        var responses = new TurnResponseWriter(System.Text.Encoding.UTF8.GetBytes(stunOptions.Software ?? string.Empty), metrics);
        var permissions = new TurnPermissionHandler(_options, new TurnPeerPolicy(_options, ServerAddresses(_binder)), responses, metrics, time, events);
        _dispatcher = new TurnMessageDispatcher(
            // One bound for every STUN message, Send indications included: Relay:Stun:MaxMessageSize (4 KiB
            // by default, room for any MTU-sized payload). Bulk data belongs in ChannelData anyway.
            StunReaderLimits.Default with { MaxMessageSize = stunOptions.MaxMessageSize },
            _allocations,
            new TurnAuthenticator(credentials, nonces, _options.Realm, responses),
            responses,
            new TurnAllocateHandler(_options, _allocations, _binder, _loops, _tcp, responses, metrics, time, events, loggers.CreateLogger<TurnAllocateHandler>()),
            new TurnRefreshHandler(_options, _allocations, responses, time),
            permissions,
            new TurnTcpRequestHandler(_options, _tcp, permissions, responses, metrics, time),
            _dataPath,
            metrics,
            events);
    }

    public bool Enabled => _options.Enabled;

    public IPAddress? RelayIPv4 => _binder.RelayIPv4;

    public IPAddress? RelayIPv6 => _binder.RelayIPv6;

    public IPAddress? AdvertisedIPv4 => _binder.AdvertisedIPv4;

    /// <summary>ChannelData framing limits, with the RFC 5766 channel range when configured.</summary>
    public ChannelDataLimits ChannelLimits => ChannelDataLimits.Default with { AcceptRfc5766Channels = _options.AcceptRfc5766ChannelNumbers };

    public int AllocationCount => _allocations.Count;

    /// <summary>Both directions of UDP-relayed data; the relay loops call it for what peers send.</summary>
    public TurnDataPath DataPath => _dataPath;

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

        _loops.Start(_dataPath, _time, _loopLogger);
        _sweepTimer = _time.CreateTimer(static state => ((TurnRelay)state!).Sweep(), this, SweepInterval, SweepInterval);
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

        // Allocations first: their relay sockets leave the loops, which close them as they stop.
        _allocations.Dispose();
        _loops.Dispose();
    }

    /// <summary>The allocation of a 5-tuple, if any.</summary>
    public TurnAllocation? Find(in TurnFiveTuple fiveTuple) => _allocations.Find(fiveTuple);

    /// <summary>
    /// Handles a TURN request or indication (anything but Binding) and writes the response into
    /// <paramref name="response"/>. Returns its length, or 0 when nothing is to be sent.
    /// </summary>
    public int HandleMessage(ReadOnlySpan<byte> message, in TurnContext context, Span<byte> response) =>
        _dispatcher.Dispatch(message, context, response, out _);

    /// <summary>
    /// As <see cref="HandleMessage(ReadOnlySpan{byte}, in TurnContext, Span{byte})"/>; a successful RFC 6062
    /// ConnectionBind also hands back the peer connection this stream now carries, raw, after the response.
    /// </summary>
    public int HandleMessage(ReadOnlySpan<byte> message, in TurnContext context, Span<byte> response, out TcpPeerConnection? boundPeer) =>
        _dispatcher.Dispatch(message, context, response, out boundPeer);

    /// <inheritdoc cref="TurnDataPath.HandleChannelData"/>
    public void HandleChannelData(ushort channel, ReadOnlySpan<byte> data, in TurnContext context) =>
        _dataPath.HandleChannelData(channel, data, context);

    /// <inheritdoc cref="TurnTcpRelay.RelayAsync"/>
    public Task RelayTcpDataAsync(TcpPeerConnection connection, PipeReader fromClient, PipeWriter toClient) =>
        _tcp.RelayAsync(connection, fromClient, toClient);

    /// <summary>A TCP/TLS connection ended: its allocation goes with it (RFC 8656 §3.1).</summary>
    public void OnConnectionClosed(in TurnContext context)
    {
        if (_allocations.Find(context.FiveTuple) is { } allocation)
        {
            _allocations.Delete(allocation);
        }
    }

    /// <summary>Releases what a deleted allocation held, once it left the table.</summary>
    private void OnAllocationDeleted(TurnAllocation allocation)
    {
        _metrics.AllocationDeleted();
        if (allocation.IsTcpRelay)
        {
            allocation.RelaySocket.Dispose();
            _tcp.Sweep(_time.GetMonotonicMilliseconds());
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

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            TurnLog.LogAllocationDeleted(_logger, allocation.FiveTuple.Client, allocation.RelayedAddress, LogText.Safe(allocation.Username));
        }
    }

    private void Sweep()
    {
        try
        {
            var nowMs = _time.GetMonotonicMilliseconds();
            _allocations.Sweep(nowMs);
            _tcp.Sweep(nowMs);
        }
        catch (Exception exception)
        {
            TurnLog.LogSweepFailed(_logger, exception);
        }
    }

    /// <summary>The server's own addresses, which the peer policy keeps peers from reaching.</summary>
    private static IEnumerable<IPAddress> ServerAddresses(RelayPortBinder binder)
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

        addresses.AddRange(new[] { binder.RelayIPv4, binder.RelayIPv6, binder.AdvertisedIPv4 }.OfType<IPAddress>());
        return addresses.Distinct();
    }
}
