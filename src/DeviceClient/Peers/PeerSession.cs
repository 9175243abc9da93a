using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Rendezvous;
using Relay.Protocol.Stun;

namespace Relay.DeviceClient.Peers;

/// <summary>What one side learnt about the other from the signalling (docs/rendezvous.md, offer / answer).</summary>
internal sealed record PeerSessionSetup(
    string SessionId,
    string PeerId,
    byte[] Key,
    bool Controlling,
    IReadOnlyList<RendezvousCandidate> RemoteCandidates,
    string? LocalNat,
    string? RemoteNat);

/// <summary>
/// The connectivity engine of one peer session (docs/rendezvous.md "Candidates and checks"): relay first,
/// ICE-style checks (RFC 8445 reduced) with peer-reflexive learning, birthday probing for one symmetric
/// side, nomination by the controlling side, keepalives on the chosen path and the fall back to the relay.
/// </summary>
/// <remarks>
/// One receive loop per UDP socket (the session socket, plus the birthday sockets) and one over the TURN
/// client; one check loop on the <see cref="TimeProvider"/>. All state is under <c>_gate</c>, never held
/// across an await. Datagrams are demultiplexed by their first byte (RFC 7983 §7): 0-3 STUN, 0x50-0x5F a
/// sealed channel frame (PeerCipher; 0x51 = version 1).
/// </remarks>
internal sealed partial class PeerSession : IPeerTransport
{
    private const int MaxLearnedCandidates = 64;
    private const int MaxTransactions = 8192;
    private const int MaxSourcesTracked = 1024;
    private const int KeepaliveMissesToDrop = 3;
    private static readonly TimeSpan CheckRound = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(20);
    private static readonly TimeSpan TransactionLifetime = TimeSpan.FromSeconds(15);
    private static readonly StunReaderLimits Limits = StunReaderLimits.Default;

    private readonly PeerSessionSetup _setup;
    private readonly PeerOptions _options;
    private readonly TimeProvider _time;
    private readonly PeerChannel _channel;
    private readonly byte[] _username;
    private readonly ulong _tieBreaker = BinaryPrimitives.ReadUInt64LittleEndian(RandomNumberGenerator.GetBytes(8));
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private readonly List<LocalSocket> _sockets = [];
    private readonly TurnClient? _turn;
    private readonly IPEndPoint? _remoteRelay;
    private readonly IPEndPoint? _remoteReflexive;
    private readonly IPEndPoint? _relayTarget;
    private readonly List<IPEndPoint> _checkTargets = [];
    private readonly HashSet<IPEndPoint> _knownRemotes = [];
    private readonly HashSet<(LocalSocket Socket, IPEndPoint Remote)> _valid = [];
    private readonly Dictionary<StunTransactionId, Transaction> _transactions = [];
    private readonly Dictionary<IPEndPoint, long> _datagramsFrom = [];
    private readonly Action<PeerSession, string, long?>? _onResult;
    private readonly List<Task> _loops = [];

    private (LocalSocket Socket, IPEndPoint Remote)? _direct;
    private (LocalSocket Socket, IPEndPoint Remote)? _nominating;
    private (LocalSocket Socket, IPEndPoint Remote)? _nominatedPending;
    private long _startedAt;
    private long _checkDeadline;
    private long _lastRound;
    private long _lastNominate;
    private long _lastKeepalive;
    private long _nextRecheck;
    private long _checksEndedAt;
    private long _recheckRounds;
    private bool _keepaliveOutstanding;
    private int _keepaliveMisses;
    private bool _resultReported;
    private int _learned;
    private int _disposed;

    private long _checksSent;
    private long _checksReceived;
    private long _integrityFailures;
    private long _malformed;
    private long _probesSent;
    private long _birthdaySockets;
    private long _prflxLearned;
    private long _relaySent;
    private long _relayReceived;
    private long _directSent;
    private long _directReceived;
    private long _pathDrops;

    public PeerSession(PeerSessionSetup setup, PeerLocal local, PeerOptions options, TimeProvider time, Action<PeerSession, string, long?>? onResult = null)
    {
        _setup = setup;
        _options = options;
        _time = time;
        _onResult = onResult;
        _username = Encoding.UTF8.GetBytes(setup.SessionId);
        _turn = local.Turn;
        _sockets.Add(new LocalSocket(local.Socket, extra: false));
        _channel = new PeerChannel(setup.PeerId, options, time, new PeerCipher(setup.Key, setup.SessionId, setup.Controlling, ChaCha20Poly1305.IsSupported && !options.AesGcmOnly));
        _channel.Attach(this);

        foreach (var candidate in setup.RemoteCandidates.Take(32))
        {
            // Review M10: whatever the server relayed, never check (or probe) an address no peer should be
            // reached at; the server filters too, but a device does not rely on it.
            if (!IPAddress.TryParse(candidate.Address, out var address) || candidate.Port is <= 0 or > 65535 || !Probeable(address))
            {
                _channel.OnCandidateDropped();
                continue;
            }

            var endpoint = Normalize(new IPEndPoint(address, candidate.Port));
            _knownRemotes.Add(endpoint);
            switch (candidate.Type)
            {
                case "relay":
                    _remoteRelay ??= endpoint;
                    break;
                case "srflx":
                    _remoteReflexive ??= endpoint;
                    AddTarget(endpoint);
                    break;
                default:
                    AddTarget(endpoint);
                    break;
            }
        }

        // The relay path: our allocation to the peer's relayed address (relay ↔ relay works through any pair of
        // NATs, and a UDP-blocked side reaches its allocation over TCP); without one on the peer's side, to its
        // public address. With no allocation of our own we send to the peer's relayed address from our socket.
        if (_turn is not null)
        {
            _relayTarget = _remoteRelay ?? _remoteReflexive ?? _checkTargets.FirstOrDefault();
        }
    }

    /// <summary>The channel the application uses.</summary>
    public PeerChannel Channel => _channel;

    public PeerSessionSetup Setup => _setup;

    /// <inheritdoc />
    public PeerPath Path => _direct is not null ? PeerPath.Direct : PeerPath.Relayed;

    /// <inheritdoc />
    public IPEndPoint? RemoteEndPoint => _direct is { } d ? d.Remote : _remoteRelay ?? _relayTarget;

    /// <summary>The session socket's local endpoint.</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint)_sockets[0].Socket.LocalEndPoint!;

    /// <summary>The local endpoint of the socket the direct path uses, or null.</summary>
    public IPEndPoint? DirectLocalEndPoint => _direct is { } d ? (IPEndPoint)d.Socket.Socket.LocalEndPoint! : null;

    /// <summary>Completes when birthday probing ended (at once when it does not run).</summary>
    public Task BirthdayCompleted { get; private set; } = Task.CompletedTask;

    /// <summary>Test hook: connectivity checks (and probing) wait for this before they start.</summary>
    internal Task? ChecksGate { get; set; }

    /// <summary>Test hook: decides per outgoing data datagram how often it is really sent (0 drops, 2 duplicates).</summary>
    internal Func<ReadOnlyMemory<byte>, int>? OutgoingFilter { get; set; }

    public long ChecksSent => Interlocked.Read(ref _checksSent);

    public long ChecksReceived => Interlocked.Read(ref _checksReceived);

    public long IntegrityFailures => Interlocked.Read(ref _integrityFailures);

    public long MalformedDatagrams => Interlocked.Read(ref _malformed);

    public long ProbesSent => Interlocked.Read(ref _probesSent);

    public long BirthdaySocketsOpened => Interlocked.Read(ref _birthdaySockets);

    public long PeerReflexiveLearned => Interlocked.Read(ref _prflxLearned);

    public long RelayDatagramsSent => Interlocked.Read(ref _relaySent);

    public long RelayDatagramsReceived => Interlocked.Read(ref _relayReceived);

    public long DirectDatagramsSent => Interlocked.Read(ref _directSent);

    public long DirectDatagramsReceived => Interlocked.Read(ref _directReceived);

    /// <summary>Rounds of re-checks run while relayed (<see cref="PeerOptions.RecheckInterval"/>).</summary>
    public long RecheckRounds => Interlocked.Read(ref _recheckRounds);

    /// <summary>Test hook: an outgoing check (not an answer) to this remote leaves only when this returns true, as behind a firewall.</summary>
    internal Func<IPEndPoint, bool>? CheckFilter { get; set; }

    /// <summary>How many remotes each round of checks goes to.</summary>
    internal int CheckTargetCount
    {
        get
        {
            lock (_gate)
            {
                return _checkTargets.Count;
            }
        }
    }

    /// <summary>Direct paths given up because keepalive checks went unanswered.</summary>
    public long PathDrops => Interlocked.Read(ref _pathDrops);

    /// <summary>Datagrams (any kind) received from <paramref name="source"/> on the session's sockets or through the relay.</summary>
    public long DatagramsFrom(IPEndPoint source)
    {
        lock (_gate)
        {
            return _datagramsFrom.GetValueOrDefault(Normalize(source));
        }
    }

    /// <summary>
    /// Starts the receive loops and the checks; completes when the channel can carry messages: at once over
    /// the relay (relay first), or, without a relay path, when a direct path is found.
    /// </summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _startedAt = _time.GetTimestamp();
        _checkDeadline = _startedAt + ToTimestamp(_options.CheckTimeout);
        StartReceiveLoop(_sockets[0]);
        if (_turn is not null)
        {
            _loops.Add(ReceiveRelayAsync(_turn));
        }

        _loops.Add(CheckLoopAsync());
        var relay = _options.PathPolicy != PeerPathPolicy.DirectOnly && (_relayTarget is not null || _remoteRelay is not null);
        if (relay && _turn is not null && _relayTarget is not null)
        {
            // ChannelBind also installs the permission (RFC 8656 §11.2), so the peer's relay may send to ours.
            await _turn.BindChannelAsync(_relayTarget, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (relay)
        {
            return;
        }

        var direct = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnPath(object? sender, PeerPathChangedEventArgs e) => direct.TrySetResult();
        _channel.PathChanged += OnPath;
        try
        {
            if (_direct is null)
            {
                await direct.Task.WaitAsync(_options.CheckTimeout + _options.BirthdayWindow, _time, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _channel.PathChanged -= OnPath;
        }
    }

    /// <inheritdoc />
    public async ValueTask SendDatagramAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        var copies = OutgoingFilter?.Invoke(datagram) ?? 1;
        for (var i = 0; i < copies; i++)
        {
            var direct = _direct;
            if (direct is { } d)
            {
                await SendToAsync(d.Socket, d.Remote, datagram, cancellationToken).ConfigureAwait(false);
                Interlocked.Increment(ref _directSent);
            }
            else if (_turn is not null && _relayTarget is not null && _options.PathPolicy != PeerPathPolicy.DirectOnly)
            {
                await _turn.SendAsync(_relayTarget, datagram, cancellationToken).ConfigureAwait(false);
                Interlocked.Increment(ref _relaySent);
            }
            else if (_remoteRelay is not null && _options.PathPolicy != PeerPathPolicy.DirectOnly)
            {
                await SendToAsync(_sockets[0], _remoteRelay, datagram, cancellationToken).ConfigureAwait(false);
                Interlocked.Increment(ref _relaySent);
            }
            else
            {
                throw new InvalidOperationException("No path to the peer (no relay, and no direct path yet).");
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        LocalSocket[] sockets;
        lock (_gate)
        {
            sockets = [.. _sockets];
        }

        foreach (var socket in sockets)
        {
            socket.Socket.Dispose();
        }

        if (_turn is not null)
        {
            await _turn.DisposeAsync().ConfigureAwait(false);
        }

        Task[] loops;
        lock (_gate)
        {
            loops = [.. _loops];
        }

        await Task.WhenAll(loops).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await BirthdayCompleted.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await _channel.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }

    private void AddTarget(IPEndPoint endpoint)
    {
        if (!_checkTargets.Contains(endpoint))
        {
            _checkTargets.Add(endpoint);
        }
    }

    private void StartReceiveLoop(LocalSocket socket)
    {
        lock (_gate)
        {
            _loops.Add(ReceiveAsync(socket));
        }
    }

    private async Task ReceiveAsync(LocalSocket local)
    {
        var buffer = new byte[Math.Max(2048, _options.MaxMessageSize + 128)];
        var address = new SocketAddress(local.Socket.AddressFamily);
        var template = local.Socket.AddressFamily == AddressFamily.InterNetworkV6 ? new IPEndPoint(IPAddress.IPv6Any, 0) : new IPEndPoint(IPAddress.Any, 0);
        while (!_stop.IsCancellationRequested)
        {
            int received;
            try
            {
                received = await local.Socket.ReceiveFromAsync(buffer, SocketFlags.None, address, _stop.Token).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                // ICMP errors surface on some platforms as ConnectionReset: the socket is still good.
                continue;
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }

            var source = Normalize((IPEndPoint)template.Create(address));
            OnDatagram(local, source, buffer.AsMemory(0, received));
        }
    }

    private async Task ReceiveRelayAsync(TurnClient turn)
    {
        try
        {
            await foreach (var data in turn.ReadAllAsync(_stop.Token).ConfigureAwait(false))
            {
                OnDatagram(null, Normalize(data.Peer), data.Data);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    /// <summary>RFC 7983 §7 demultiplexing; <paramref name="local"/> is null for datagrams that came through our relay.</summary>
    private void OnDatagram(LocalSocket? local, IPEndPoint source, ReadOnlyMemory<byte> datagram)
    {
        if (datagram.IsEmpty)
        {
            return;
        }

        lock (_gate)
        {
            if (_datagramsFrom.TryGetValue(source, out var count) || _datagramsFrom.Count < MaxSourcesTracked)
            {
                _datagramsFrom[source] = count + 1;
            }
        }

        var first = datagram.Span[0];
        if (first <= 3)
        {
            OnStun(local, source, datagram.Span);
        }
        else if (first is (>= 0x50 and <= 0x5F) or (>= 0x30 and <= 0x40))
        {
            // 0x30-0x40 are the unsealed PUBLISH/PUBACK of clients before the channel was encrypted: the channel
            // refuses them as unauthentic (counted), rather than calling them noise.
            if (!AcceptsData(local, source))
            {
                _channel.OnUnknownSource();
                return;
            }

            Interlocked.Increment(ref local is null || source.Equals(_remoteRelay) ? ref _relayReceived : ref _directReceived);
            _channel.OnDatagram(datagram);
        }
        else
        {
            Interlocked.Increment(ref _malformed);
        }
    }

    /// <summary>Data is taken only from the relay or from an address that passed an authenticated check.</summary>
    private bool AcceptsData(LocalSocket? local, IPEndPoint source)
    {
        if (local is null || source.Equals(_remoteRelay))
        {
            return true;
        }

        lock (_gate)
        {
            return _valid.Contains((local, source)) || (_direct is { } d && d.Remote.Equals(source));
        }
    }

    private async ValueTask SendToAsync(LocalSocket local, IPEndPoint remote, ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        try
        {
            await local.Socket.SendToAsync(datagram, SocketFlags.None, remote, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException)
        {
            // Unreachable or refused: a lost datagram, as on any UDP path.
        }
    }

    /// <summary>Whether checks and probes may go to <paramref name="address"/> (Relay.Protocol's CandidateAddress, loopback only when the options allow it).</summary>
    private bool Probeable(IPAddress address) =>
        CandidateAddress.IsProbeable(address) || (_options.AllowLoopbackCandidates && CandidateAddress.IsLoopback(address));

    private long ToTimestamp(TimeSpan span) => (long)(span.TotalSeconds * _time.TimestampFrequency);

    private static IPEndPoint Normalize(IPEndPoint endPoint) =>
        endPoint.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(endPoint.Address.MapToIPv4(), endPoint.Port) : endPoint;

    internal sealed class LocalSocket(Socket socket, bool extra)
    {
        public Socket Socket { get; } = socket;

        public bool Extra { get; } = extra;
    }

    private enum TransactionKind
    {
        Check,
        Nominate,
        Keepalive,
        Probe,
    }

    private readonly record struct Transaction(LocalSocket? Socket, IPEndPoint Remote, long SentAt, TransactionKind Kind);
}
