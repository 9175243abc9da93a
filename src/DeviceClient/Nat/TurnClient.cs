using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Relay.Protocol.Stun;

namespace Relay.DeviceClient.Nat;

/// <summary>
/// A TURN client (RFC 8656) for any standard server, over UDP or TCP: allocates a relayed transport
/// address with long-term credentials, installs permissions and channels and keeps them, the
/// allocation too, alive on a <see cref="TimeProvider"/>, and relays data to and from peers.
/// </summary>
/// <remarks>
/// One receive loop owns the socket. Requests are serialized (the nonce is shared state); sends and
/// receives of peer data run concurrently with them. Disposal frees the allocation (Refresh with
/// LIFETIME 0, RFC 8656 §7).
/// </remarks>
public sealed partial class TurnClient : IAsyncDisposable
{
    private readonly TurnClientOptions _options;
    private readonly StunLongTermCredentials _credentials;
    private readonly TimeProvider _time;
    private readonly Channel<TurnPeerData> _received;
    private readonly CancellationTokenSource _stop = new();

    private readonly TurnPeerTable _peers = new();

    private ITimer? _maintenanceTimer;
    private int _maintaining;
    private int _pendingTicks;
    private int _disposed;
    private bool _allocated;
    private long _dropped;
    private long _receivedViaChannel;
    private long _receivedViaIndication;
    private int _allocationRefreshes;
    private int _permissionRefreshes;
    private int _channelRefreshes;

    private TurnClient(IPEndPoint server, TurnTransport transport, TurnCredentials credentials, TurnClientOptions options)
    {
        Server = server;
        Transport = transport;
        _credentials = new StunLongTermCredentials(credentials);
        _options = options;
        _time = options.TimeProvider;
        _received = Channel.CreateBounded<TurnPeerData>(new BoundedChannelOptions(Math.Max(1, options.ReceiveQueueCapacity))
        {
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite then fails, and the datagram is dropped and counted.
        });
        _socket = new Socket(server.AddressFamily, transport == TurnTransport.Udp ? SocketType.Dgram : SocketType.Stream, transport == TurnTransport.Udp ? ProtocolType.Udp : ProtocolType.Tcp);
    }

    /// <summary>The TURN server.</summary>
    public IPEndPoint Server { get; }

    /// <summary>The local endpoint of the socket to the server.</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint)_socket.LocalEndPoint!;

    /// <summary>The transport to the server.</summary>
    public TurnTransport Transport { get; }

    /// <summary>XOR-RELAYED-ADDRESS: where peers send to reach this client.</summary>
    public IPEndPoint RelayedAddress { get; private set; } = null!;

    /// <summary>XOR-MAPPED-ADDRESS of the Allocate response: this client's server-reflexive address; null if the server sent none.</summary>
    public IPEndPoint? MappedAddress { get; private set; }

    /// <summary>The lifetime the server granted last.</summary>
    public TimeSpan Lifetime { get; private set; }

    /// <summary>When the allocation expires unless refreshed (on the configured <see cref="TimeProvider"/>).</summary>
    public DateTimeOffset ExpiresAt { get; private set; }

    /// <summary>Peer datagrams dropped because the receive queue was full, or malformed messages from the server.</summary>
    public long DroppedDatagrams => Interlocked.Read(ref _dropped);

    /// <summary>Peer datagrams received as ChannelData.</summary>
    public long ReceivedViaChannel => Interlocked.Read(ref _receivedViaChannel);

    /// <summary>Peer datagrams received as Data indications.</summary>
    public long ReceivedViaIndication => Interlocked.Read(ref _receivedViaIndication);

    /// <summary>Automatic Refresh transactions that succeeded.</summary>
    public int AllocationRefreshes => Volatile.Read(ref _allocationRefreshes);

    /// <summary>Automatic CreatePermission renewals that succeeded.</summary>
    public int PermissionRefreshes => Volatile.Read(ref _permissionRefreshes);

    /// <summary>Automatic ChannelBind renewals that succeeded.</summary>
    public int ChannelRefreshes => Volatile.Read(ref _channelRefreshes);

    /// <summary>The last failure of automatic maintenance (refresh, permission or channel renewal), or null; retried at the next interval.</summary>
    public Exception? LastMaintenanceError { get; private set; }

    /// <summary>
    /// Connects to <paramref name="server"/> and allocates a UDP relayed address (RFC 8656 §7.1),
    /// answering the long-term credential challenge (RFC 8489 §9.2).
    /// </summary>
    /// <exception cref="TurnErrorException">The server refused, e.g. 401 for wrong credentials or 486 over quota.</exception>
    /// <exception cref="TimeoutException">No answer.</exception>
    /// <exception cref="TurnProtocolException">The server's answers broke the protocol.</exception>
    public static async Task<TurnClient> AllocateAsync(IPEndPoint server, TurnTransport transport, TurnCredentials credentials, TurnClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(server);
        ArgumentNullException.ThrowIfNull(credentials);
        var client = new TurnClient(server, transport, credentials, options ?? new TurnClientOptions());
        try
        {
            await client.ConnectAsync(cancellationToken).ConfigureAwait(false);
            await client.AllocateCoreAsync(cancellationToken).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Refreshes the allocation (RFC 8656 §8); returns the lifetime granted.</summary>
    /// <param name="lifetime">Requested lifetime; null for <see cref="TurnClientOptions.RequestedLifetime"/> or the server's default.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    public async Task<TimeSpan> RefreshAsync(TimeSpan? lifetime = null, CancellationToken cancellationToken = default)
    {
        lifetime ??= _options.RequestedLifetime;
        var seconds = lifetime is { } l ? (uint?)Math.Clamp(l.TotalSeconds, 0, uint.MaxValue) : null;
        var response = await ExecuteAsync(StunMethod.Refresh, (ref StunMessageWriter w) =>
        {
            if (seconds is { } s)
            {
                w.WriteUInt32(StunAttributeType.Lifetime, s);
            }
        }, cancellationToken).ConfigureAwait(false);
        var granted = ReadLifetime(Parse(response));
        SetLifetime(granted);
        return granted;
    }

    /// <summary>Frees the allocation now (Refresh with LIFETIME 0, RFC 8656 §8).</summary>
    public async Task DeallocateAsync(CancellationToken cancellationToken = default)
    {
        await ExecuteAsync(StunMethod.Refresh, static (ref StunMessageWriter w) => w.WriteUInt32(StunAttributeType.Lifetime, 0), cancellationToken).ConfigureAwait(false);

        _allocated = false;
    }

    /// <summary>
    /// Installs permissions for <paramref name="peers"/> (RFC 8656 §10), all or none, and keeps them
    /// renewed before their 300 s expiry. A permission covers the peer's IP address; the port is sent
    /// (some servers refuse port 0) but RFC 8656 §10.2 has the server ignore it.
    /// </summary>
    public async Task CreatePermissionAsync(IEnumerable<IPEndPoint> peers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(peers);
        var endpoints = peers.Select(Normalize).DistinctBy(static p => p.Address).ToArray();
        if (endpoints.Length is 0 or > MaxPeersPerRequest)
        {
            throw new ArgumentOutOfRangeException(nameof(peers), $"Between 1 and {MaxPeersPerRequest} peers per request.");
        }

        await CreatePermissionCoreAsync(endpoints, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Installs a permission for one peer; see <see cref="CreatePermissionAsync(IEnumerable{IPEndPoint}, CancellationToken)"/>.</summary>
    public Task CreatePermissionAsync(IPEndPoint peer, CancellationToken cancellationToken = default) =>
        CreatePermissionAsync([peer], cancellationToken);

    /// <summary>
    /// Binds a channel to <paramref name="peer"/> (RFC 8656 §11), which also installs its permission, and
    /// keeps it renewed before its 600 s expiry. Data to this peer then goes as ChannelData. Returns the
    /// channel number; binding a bound peer again renews and returns the same number.
    /// </summary>
    public async Task<ushort> BindChannelAsync(IPEndPoint peer, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(peer);
        peer = Normalize(peer);
        var number = _peers.ChannelNumberFor(peer);
        await ChannelBindCoreAsync(peer, number, cancellationToken).ConfigureAwait(false);
        return number;
    }

    /// <summary>Peer data as it arrives; waits for the next datagram.</summary>
    /// <exception cref="ChannelClosedException">The client was disposed or its connection ended.</exception>
    public ValueTask<TurnPeerData> ReceiveAsync(CancellationToken cancellationToken = default) => _received.Reader.ReadAsync(cancellationToken);

    /// <summary>Peer data as an async stream, ending when the client is disposed.</summary>
    public async IAsyncEnumerable<TurnPeerData> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var item in _received.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return item;
        }
    }

    /// <summary>Frees the allocation (best effort, bounded by <see cref="TurnClientOptions.DisposeTimeout"/>) and closes the socket.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        if (_maintenanceTimer is not null)
        {
            await _maintenanceTimer.DisposeAsync().ConfigureAwait(false);
        }

        if (_allocated && _connectionError is null)
        {
            using var timeout = new CancellationTokenSource(_options.DisposeTimeout);
            try
            {
                await DeallocateAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TurnErrorException or TimeoutException or OperationCanceledException or TurnProtocolException or IOException or SocketException or ObjectDisposedException)
            {
                // The allocation expires on its own; nothing more to do on the way out.
            }
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        _socket.Dispose();
        if (_receiveLoop is not null)
        {
            await _receiveLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        FailPending(new ObjectDisposedException(nameof(TurnClient)));
        _received.Writer.TryComplete();
        _stop.Dispose();
    }

    private async Task AllocateCoreAsync(CancellationToken cancellationToken)
    {
        var lifetime = _options.RequestedLifetime is { } l ? (uint?)Math.Clamp(l.TotalSeconds, 0, uint.MaxValue) : null;
        var response = await ExecuteAsync(StunMethod.Allocate, (ref StunMessageWriter w) =>
        {
            // RFC 8656 §14.7: REQUESTED-TRANSPORT is the protocol number (17, UDP) followed by three RFFU bytes.
            w.WriteUInt32(StunAttributeType.RequestedTransport, 17u << 24);
            if (lifetime is { } s)
            {
                w.WriteUInt32(StunAttributeType.Lifetime, s);
            }
        }, cancellationToken).ConfigureAwait(false);

        var message = Parse(response);

        // RFC 8656 §7.3: the success response carries XOR-RELAYED-ADDRESS, LIFETIME and XOR-MAPPED-ADDRESS.
        if (!message.TryGetAttribute(StunAttributeType.XorRelayedAddress, out var relayed)
            || !StunAttributeReader.TryReadXorAddress(relayed, message.Header, out var relayedAddress))
        {
            throw new TurnProtocolException("Allocate success response without XOR-RELAYED-ADDRESS.");
        }

        RelayedAddress = relayedAddress.ToIPEndPoint();
        if (message.TryGetAttribute(StunAttributeType.XorMappedAddress, out var mapped) && StunAttributeReader.TryReadXorAddress(mapped, message.Header, out var mappedAddress))
        {
            MappedAddress = mappedAddress.ToIPEndPoint();
        }

        SetLifetime(ReadLifetime(message));
        _allocated = true;
        var interval = _options.MaintenanceInterval > TimeSpan.Zero ? _options.MaintenanceInterval : TimeSpan.FromSeconds(15);
        _maintenanceTimer = _time.CreateTimer(static state => ((TurnClient)state!).OnMaintenanceTick(), this, interval, interval);
    }

    private async Task CreatePermissionCoreAsync(IPEndPoint[] peers, CancellationToken cancellationToken)
    {
        await ExecuteAsync(StunMethod.CreatePermission, (ref StunMessageWriter w) =>
        {
            // RFC 8656 §10.1: one XOR-PEER-ADDRESS per peer; the port is ignored by the server.
            foreach (var peer in peers)
            {
                w.WriteXorAddress(StunAttributeType.XorPeerAddress, StunAddress.FromEndPoint(peer));
            }
        }, cancellationToken).ConfigureAwait(false);

        _peers.Permitted(peers, _time.GetUtcNow());
    }

    private async Task ChannelBindCoreAsync(IPEndPoint peer, ushort number, CancellationToken cancellationToken)
    {
        await ExecuteAsync(StunMethod.ChannelBind, (ref StunMessageWriter w) =>
        {
            // RFC 8656 §14.1: CHANNEL-NUMBER is the number followed by two RFFU bytes.
            w.WriteUInt32(StunAttributeType.ChannelNumber, (uint)number << 16);
            w.WriteXorAddress(StunAttributeType.XorPeerAddress, StunAddress.FromEndPoint(peer));
        }, cancellationToken).ConfigureAwait(false);

        _peers.Bound(number, peer, _time.GetUtcNow());
    }

    private void SetLifetime(TimeSpan lifetime)
    {
        Lifetime = lifetime;
        ExpiresAt = _time.GetUtcNow() + lifetime;
    }

    private static TimeSpan ReadLifetime(in StunMessage message) =>
        message.TryGetAttribute(StunAttributeType.Lifetime, out var value) && StunAttributeReader.TryReadUInt32(value, out var seconds)
            ? TimeSpan.FromSeconds(seconds)
            : TimeSpan.FromSeconds(600); // RFC 8656 §3.2's default, for a server that omits it.

    private void OnMaintenanceTick()
    {
        // A tick that finds a pass running leaves a note, and that pass runs once more: no deadline check is lost.
        Interlocked.Increment(ref _pendingTicks);
        if (Interlocked.CompareExchange(ref _maintaining, 1, 0) == 0)
        {
            _ = MaintainLoopAsync();
        }
    }

    private async Task MaintainLoopAsync()
    {
        while (true)
        {
            Interlocked.Exchange(ref _pendingTicks, 0);
            await MaintainAsync().ConfigureAwait(false);
            Volatile.Write(ref _maintaining, 0);
            if (Volatile.Read(ref _pendingTicks) == 0 || Interlocked.CompareExchange(ref _maintaining, 1, 0) != 0)
            {
                return;
            }
        }
    }

    // Every failure is caught and kept in LastMaintenanceError, so the discarded task never faults unobserved.
    private async Task MaintainAsync()
    {
        try
        {
            var soon = _time.GetUtcNow() + _options.RefreshMargin;
            if (_allocated && ExpiresAt <= soon)
            {
                await RefreshAsync(null, _stop.Token).ConfigureAwait(false);
                Interlocked.Increment(ref _allocationRefreshes);
            }

            var (permissions, channels) = _peers.ExpiringBy(soon);
            foreach (var chunk in permissions.Chunk(MaxPeersPerRequest))
            {
                await CreatePermissionCoreAsync(chunk, _stop.Token).ConfigureAwait(false);
                Interlocked.Increment(ref _permissionRefreshes);
            }

            foreach (var channel in channels)
            {
                await ChannelBindCoreAsync(channel.Peer, channel.Number, _stop.Token).ConfigureAwait(false);
                Interlocked.Increment(ref _channelRefreshes);
            }

            LastMaintenanceError = null;
        }
        catch (Exception e)
        {
            LastMaintenanceError = e;
        }
    }

    private static IPEndPoint Normalize(IPEndPoint endPoint) =>
        endPoint.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(endPoint.Address.MapToIPv4(), endPoint.Port) : endPoint;
}
