using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;
using Relay.Protocol.Rendezvous;
using Relay.Rendezvous.Introductions;
using Relay.Server.Turn;

namespace Relay.Server.Rendezvous;

/// <summary>
/// Rendezvous signalling over the devices' own MQTT connections (docs/rendezvous.md): reads
/// <c>devices/{id}/rendezvous/out</c>, answers on <c>devices/{id}/rendezvous/in</c>. The broker's hook only
/// queues (it runs on the device's read loop); one loop owns the introduction table and the rate limiter,
/// so neither needs a lock, and a sweep about once a second times out unanswered offers. Offers, answers
/// and errors go out with <see cref="IMqttDeviceChannel.PublishToClient"/>: only to that device, only while it is
/// online and subscribed, never stored for later (a late offer is worthless; the requester retries).
/// </summary>
internal sealed partial class RendezvousService : BackgroundService, IMqttMessageObserver
{
    public const string OutSuffix = "/rendezvous/out";
    public const string InSuffix = "/rendezvous/in";
    private const string TopicPrefix = "devices/";
    private const int QueueCapacity = 8192;
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    // Marks our messages as server-published: the broker drops them with the connection instead of keeping them for a resumed session.
    private static readonly object PublishTag = new();
    private static readonly MqttMessageProperties JsonProperties = new(1, "application/json", null, null, null);
    private static readonly string[] LimitKeys =
    [
        "Relay:Rendezvous:MaxIntroductionsPerMinute", "Relay:Rendezvous:MaxPendingSessions", "rendezvous event queue",
        "Relay:Rendezvous:MaxQueuedMessagesPerDevice", "the 8 KiB signalling message limit", "Relay:Rendezvous:MaxCredentialsPerMinute",
        "candidate address checks",
    ];

    private readonly RendezvousOptions _options;
    private readonly RendezvousPolicy _policy;
    private readonly IMqttDeviceChannel _broker;
    private readonly IDeviceRegistry _registry;
    private readonly TurnCredentialStore _credentials;
    private readonly TurnOptions _turn;
    private readonly TurnUris _turnUris;
    private readonly NatReports _nats;
    private readonly RendezvousMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ILogger<RendezvousService> _logger;
    private readonly IntroductionTable _table;
    private readonly IntroductionRateLimiter _limiter;
    private readonly IntroductionRateLimiter _mintLimiter;

    // Messages of each device now in _arrivals: its share of the queue is bounded, so one device sending as
    // fast as its connection allows cannot fill the queue and starve every other device's introductions.
    private readonly Primitives.KeyedCounter<string> _queuedPerDevice = new(StringComparer.Ordinal);
    private readonly Channel<Arrival> _arrivals = Channel.CreateBounded<Arrival>(new BoundedChannelOptions(QueueCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });
    private readonly Primitives.LogThrottle _limitLog;

    public RendezvousService(RendezvousOptions options, IMqttDeviceChannel broker, IDeviceRegistry registry, TurnCredentialStore credentials, IOptions<TurnOptions> turn, TurnUris turnUris, NatReports nats, RendezvousMetrics metrics, TimeProvider time, ILogger<RendezvousService> logger)
    {
        _options = options;
        _policy = RendezvousPolicy.Create(options);
        _broker = broker;
        _registry = registry;
        _credentials = credentials;
        _turn = turn.Value;
        _turnUris = turnUris;
        _nats = nats;
        _metrics = metrics;
        _time = time;
        _logger = logger;
        _table = new IntroductionTable(options.MaxPendingSessions);
        _limiter = new IntroductionRateLimiter(options.MaxIntroductionsPerMinute, time);
        _mintLimiter = new IntroductionRateLimiter(options.MaxCredentialsPerMinute, time);
        _limitLog = new Primitives.LogThrottle(RendezvousMetrics.LimitNames.Length, TimeSpan.FromSeconds(10), time);
    }

    public static string InTopic(string device) => TopicPrefix + device + InSuffix;

    public static string OutTopic(string device) => TopicPrefix + device + OutSuffix;

    public override Task StartAsync(CancellationToken cancellationToken)
    {
        if (_turn.Enabled && !_credentials.HasSharedSecrets && _credentials.CanMintRestCredentials)
        {
            LogGeneratedSecret();
        }

        return base.StartAsync(cancellationToken);
    }

    // --- IMqttMessageObserver: on the connections' read loops, so only a topic check and a queue write. ---
    // Signalling is not durable and a dropped message is answered by the device's own retry, so every
    // message may be acknowledged at once (true).
    public ValueTask<bool> OnMessageReceived(string clientId, StoredMessage message)
    {
        // Only a device's own out topic, from the device's own session (its ACL lets nobody else publish there,
        // and no other principal may hold its client id); the payload is the message's own copy.
        var topic = message.Topic;
        if (topic.Length != TopicPrefix.Length + clientId.Length + OutSuffix.Length
            || !topic.StartsWith(TopicPrefix, StringComparison.Ordinal)
            || !topic.EndsWith(OutSuffix, StringComparison.Ordinal)
            || !topic.AsSpan(TopicPrefix.Length, clientId.Length).SequenceEqual(clientId)
            || !_broker.IsDeviceSession(clientId))
        {
            return ValueTask.FromResult(true);
        }

        if (!_queuedPerDevice.TryEnter(clientId, _options.MaxQueuedMessagesPerDevice))
        {
            LimitHit(RendezvousLimit.DeviceQueue, clientId);
            return ValueTask.FromResult(true);
        }

        // Checked before queueing: an oversized payload never sits in the queue; the device still hears why.
        var oversized = message.Payload.Length > RendezvousMessageReader.MaxMessageBytes;
        if (oversized)
        {
            LimitHit(RendezvousLimit.MessageSize, clientId);
        }

        if (!_arrivals.Writer.TryWrite(new Arrival(clientId, oversized ? default : message.Payload, oversized)))
        {
            // The loop is far behind: drop and count, the device sees no answer and retries on its timeout.
            _queuedPerDevice.Leave(clientId);
            LimitHit(RendezvousLimit.EventQueue, clientId);
        }

        return ValueTask.FromResult(true);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var ticker = TickAsync(stoppingToken);
        var reader = _arrivals.Reader;
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var arrival))
                {
                    try
                    {
                        if (arrival.Device is null)
                        {
                            Sweep();
                        }
                        else
                        {
                            _queuedPerDevice.Leave(arrival.Device);
                            await HandleAsync(arrival.Device, arrival.Payload, arrival.Oversized, stoppingToken).ConfigureAwait(false);
                        }
                    }
                    catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
                    {
                        // A real fault (the registry's store failing): logged, and the loop goes on with the next message.
                        LogHandlerFailed(e, arrival.Device ?? "(sweep)");
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }

        await ticker.ConfigureAwait(false);
    }

    // The sweep rides the same queue so it never races the handlers; when the queue is full it waits for the next tick.
    private async Task TickAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(SweepInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                _arrivals.Writer.TryWrite(new Arrival(null, default));
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async ValueTask HandleAsync(string device, ReadOnlyMemory<byte> payload, bool oversized, CancellationToken cancellationToken)
    {
        if (oversized)
        {
            _metrics.Received(null);
            SendError(device, RendezvousErrorCodes.BadRequest, $"message over {RendezvousMessageReader.MaxMessageBytes} bytes", null, null);
            return;
        }

        if (!RendezvousMessageReader.TryRead(payload.Span, out var message, out var problem))
        {
            _metrics.Received(null);
            LogBadRequest(device, problem);
            SendError(device, RendezvousErrorCodes.BadRequest, problem, message?.SessionId is { } s && RendezvousMessageReader.IsSessionId(s) ? s : null, message?.RequestId is { Length: <= RendezvousMessageReader.MaxRequestIdLength } r ? r : null);
            return;
        }

        _metrics.Received(message!.Type);
        switch (message.Type)
        {
            case RendezvousMessageTypes.TurnCredentialsRequest:
                MintCredentials(device, message.RequestId!);
                break;
            case RendezvousMessageTypes.NatReport:
                _nats.Set(device, message.Nat!);
                break;
            case RendezvousMessageTypes.Connect:
                await ConnectAsync(device, message, cancellationToken).ConfigureAwait(false);
                break;
            case RendezvousMessageTypes.Answer:
                Answer(device, message);
                break;
            case RendezvousMessageTypes.Reject:
                Reject(device, message);
                break;
            case RendezvousMessageTypes.Result:
                Result(device, message);
                break;
        }
    }

    /// <summary>draft-uberti-behave-turn-rest-00 credentials for this device, on the address its MQTT connection reached.</summary>
    private void MintCredentials(string device, string requestId)
    {
        // Each set of credentials can open relay allocations: one device must not be able to mint its way to every relay port.
        if (!_mintLimiter.TryAcquire(device))
        {
            LimitHit(RendezvousLimit.CredentialsPerMinute, device);
            SendError(device, RendezvousErrorCodes.RateLimited, $"more than {_options.MaxCredentialsPerMinute} TURN credential requests per minute; reuse the ones you have", null, requestId);
            return;
        }

        var host = _turn.ExternalAddress is { Length: > 0 } external ? external : LocalAddress.HostOf(_broker.LocalEndPointOf(device));
        if (!_turn.Enabled || !_credentials.CanMintRestCredentials || host is null)
        {
            SendError(device, RendezvousErrorCodes.Unavailable, _turn.Enabled ? "this server cannot name its TURN address for this connection" : "TURN is disabled on this server (Relay:Turn:Enabled=false)", null, requestId);
            return;
        }

        var (username, password, ttl) = _credentials.MintRestCredential(device, TimeSpan.FromSeconds(_options.TurnCredentialTtlSeconds));
        _metrics.CredentialsMinted();
        Publish(device, new RendezvousMessage
        {
            Type = RendezvousMessageTypes.TurnCredentials,
            RequestId = requestId,
            Turn = new RendezvousTurnCredentials(username, password, ttl, _turnUris.For(host, includeStun: true)),
        });
    }

    private async ValueTask ConnectAsync(string requester, RendezvousMessage message, CancellationToken cancellationToken)
    {
        var sessionId = message.SessionId!;
        var peer = message.Peer!;
        if (!DeviceId.IsValid(peer) || string.Equals(peer, requester, StringComparison.Ordinal))
        {
            SendError(requester, RendezvousErrorCodes.BadRequest, "'peer' must be another device's id", sessionId, null);
            return;
        }

        // Before any lookup, so a flood of connects costs a dictionary probe each, not a registry read.
        if (!_limiter.TryAcquire(requester))
        {
            LimitHit(RendezvousLimit.IntroductionsPerMinute, requester);
            SendError(requester, RendezvousErrorCodes.RateLimited, $"more than {_options.MaxIntroductionsPerMinute} introductions per minute; retry later", sessionId, null);
            return;
        }

        var from = await _registry.FindAsync(requester, cancellationToken).ConfigureAwait(false);
        var to = await _registry.FindAsync(peer, cancellationToken).ConfigureAwait(false);

        // Authorization comes before existence: a refused requester cannot tell a missing peer from a forbidden one.
        if (!_policy.Allows(requester, from?.Tags ?? [], peer, to?.Tags ?? []))
        {
            LogForbidden(requester, peer);
            SendError(requester, RendezvousErrorCodes.Forbidden, "not allowed to reach that device", sessionId, null);
            return;
        }

        if (to is null && !_broker.IsOnline(peer))
        {
            SendError(requester, RendezvousErrorCodes.UnknownPeer, "no such device", sessionId, null);
            return;
        }

        if (message.Nat is { } reported)
        {
            _nats.Set(requester, reported);
        }

        var candidates = RoutableCandidates(requester, message.Candidates);
        var key = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));
        var requesterNat = NatKinds.Normalize(message.Nat ?? _nats.Get(requester));
        switch (_table.TryAdd(new PendingIntroduction(sessionId, requester, peer, key, requesterNat, _time.GetUtcNow().AddSeconds(_options.OfferTimeoutSeconds))))
        {
            case AddIntroductionResult.DuplicateSession:
                SendError(requester, RendezvousErrorCodes.BadRequest, "'sessionId' is already in use; choose a fresh random one", sessionId, null);
                return;
            case AddIntroductionResult.Full:
                LimitHit(RendezvousLimit.PendingSessions, requester);
                SendError(requester, RendezvousErrorCodes.RateLimited, "the server has too many introductions pending; retry later", sessionId, null);
                return;
        }

        var offered = Publish(peer, new RendezvousMessage
        {
            Type = RendezvousMessageTypes.Offer,
            SessionId = sessionId,
            Peer = requester,
            Candidates = candidates,
            Nat = requesterNat,
            Key = key,
            Role = "controlled",
        });
        if (!offered)
        {
            _table.Remove(sessionId);
            _metrics.Outcome(IntroductionOutcome.Offline);
            SendError(requester, RendezvousErrorCodes.Offline, "the device is not connected (or not subscribed to its rendezvous/in topic)", sessionId, null);
        }
        else
        {
            _metrics.Outcome(IntroductionOutcome.Offered);
        }

        _metrics.Pending = _table.PendingCount;
    }

    private void Answer(string peer, RendezvousMessage message)
    {
        var sessionId = message.SessionId!;
        if (!_table.TryTake(sessionId, peer, out var introduction))
        {
            SendError(peer, RendezvousErrorCodes.BadRequest, "no offer with that sessionId is waiting for you (answered, timed out, or never made)", sessionId, null);
            return;
        }

        _metrics.Pending = _table.PendingCount;
        if (message.Nat is { } reported)
        {
            _nats.Set(peer, reported);
        }

        var peerNat = NatKinds.Normalize(message.Nat ?? _nats.Get(peer));

        // The answer and the start leave back to back on the two connections: that instant is the synchronized
        // start of both sides' connectivity checks (docs/rendezvous.md).
        var answered = Publish(introduction.Requester, new RendezvousMessage
        {
            Type = RendezvousMessageTypes.Answer,
            SessionId = sessionId,
            Peer = peer,
            Candidates = RoutableCandidates(peer, message.Candidates),
            Nat = peerNat,
            Key = introduction.Key,
            Role = "controlling",
        });
        if (!answered)
        {
            // The requester left: starting the peer's checks would only send probes to nobody.
            _metrics.Outcome(IntroductionOutcome.Offline);
            SendError(peer, RendezvousErrorCodes.Offline, "the requesting device is no longer connected", sessionId, null);
            return;
        }

        Publish(peer, new RendezvousMessage { Type = RendezvousMessageTypes.Start, SessionId = sessionId });
        _metrics.Outcome(IntroductionOutcome.Answered);
        var pair = NatKinds.PairIndex(introduction.RequesterNat, peerNat);
        _metrics.Attempt(pair);
        _table.Started(sessionId, new StartedIntroduction(introduction.Requester, peer, pair, _time.GetUtcNow() + IntroductionTable.ResultWindow));
    }

    private void Reject(string peer, RendezvousMessage message)
    {
        var sessionId = message.SessionId!;
        if (!_table.TryTake(sessionId, peer, out var introduction))
        {
            SendError(peer, RendezvousErrorCodes.BadRequest, "no offer with that sessionId is waiting for you (answered, timed out, or never made)", sessionId, null);
            return;
        }

        _metrics.Pending = _table.PendingCount;
        _metrics.Outcome(IntroductionOutcome.Rejected);
        SendError(introduction.Requester, RendezvousErrorCodes.Rejected, message.Message is { Length: > 0 } reason ? "the device declined: " + reason : "the device declined", sessionId, null);
    }

    private void Result(string device, RendezvousMessage message)
    {
        // Results are for metrics only: one for a session that is unknown here (forgotten, or never ours) is counted and dropped, not answered.
        switch (_table.TryReport(message.SessionId!, device, out var started))
        {
            case ResultLookup.Found:
                var path = Array.IndexOf(RendezvousMetrics.Paths, message.Path);
                var ms = message.MillisecondsToDirect is { } m && m <= RendezvousMessageReader.MaxMillisecondsToDirect ? m : (long?)null;
                _metrics.Result(started.PairIndex, path, ms);
                break;
            case ResultLookup.Duplicate:
                _metrics.ResultIgnored(duplicate: true);
                break;
            default:
                _metrics.ResultIgnored(duplicate: false);
                break;
        }
    }

    private void Sweep()
    {
        foreach (var introduction in _table.Expire(_time.GetUtcNow()))
        {
            _metrics.Outcome(IntroductionOutcome.Timeout);
            SendError(introduction.Requester, RendezvousErrorCodes.Timeout, $"the device did not answer within {_options.OfferTimeoutSeconds} s", introduction.SessionId, null);
        }

        _limiter.Prune();
        _mintLimiter.Prune();
        _metrics.Pending = _table.PendingCount;
    }

    private void SendError(string device, string code, string text, string? sessionId, string? requestId)
    {
        _metrics.ErrorSent(code);
        Publish(device, new RendezvousMessage { Type = RendezvousMessageTypes.Error, Code = code, Message = text, SessionId = sessionId, RequestId = sessionId is null ? requestId : null });
    }

    private bool Publish(string device, RendezvousMessage message)
    {
        var payload = JsonSerializer.SerializeToUtf8Bytes(message, RendezvousJsonContext.Default.RendezvousMessage);
        return _broker.PublishToClient(device, new StoredMessage(InTopic(device), payload, 1, false, null, JsonProperties), PublishTag);
    }

    private IReadOnlyList<RendezvousCandidate> RoutableCandidates(string device, IReadOnlyList<RendezvousCandidate>? candidates)
    {
        var routable = CandidateFilter.Routable(candidates, _turn.AllowLoopbackPeers, out var dropped);
        if (dropped > 0)
        {
            LimitHit(RendezvousLimit.Candidates, device);
        }

        return routable;
    }

    /// <summary>Counts a refusal by a limit and logs it at most once per 10 s per limit, so one noisy device cannot flood the log.</summary>
    private void LimitHit(RendezvousLimit limit, string device)
    {
        _metrics.LimitHit(limit);
        if (_limitLog.TryEnter((int)limit, out _))
        {
            LogLimitHit(LimitKeys[(int)limit], device);
        }
    }

    /// <summary>A device's message (its payload dropped when <paramref name="Oversized"/>), or (Device null) the sweep tick.</summary>
    private readonly record struct Arrival(string? Device, ReadOnlyMemory<byte> Payload, bool Oversized = false);

    [LoggerMessage(EventId = 8001, Level = LogLevel.Warning, Message = "Rendezvous: refused by {Key} ({Device}); further refusals are counted in relay_rendezvous_limit_hits_total and logged at most every 10 s")]
    private partial void LogLimitHit(string key, string device);

    [LoggerMessage(EventId = 8002, Level = LogLevel.Information, Message = "Rendezvous: {Requester} may not reach {Peer} (Relay:Rendezvous policy); refused")]
    private partial void LogForbidden(string requester, string peer);

    [LoggerMessage(EventId = 8003, Level = LogLevel.Debug, Message = "Rendezvous: bad request from {Device}: {Problem}")]
    private partial void LogBadRequest(string device, string problem);

    [LoggerMessage(EventId = 8004, Level = LogLevel.Error, Message = "Rendezvous: handling a message from {Device} failed; it got no answer")]
    private partial void LogHandlerFailed(Exception exception, string device);

    [LoggerMessage(EventId = 8005, Level = LogLevel.Information, Message = "Rendezvous: no Relay:Turn:SharedSecrets configured; TURN credentials for devices come from a secret generated in memory at start (they stop working when the server restarts; configure a shared secret to keep them)")]
    private partial void LogGeneratedSecret();
}
