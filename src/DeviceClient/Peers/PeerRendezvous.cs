using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Relay.DeviceClient.Nat;
using Relay.Protocol.Rendezvous;

namespace Relay.DeviceClient.Peers;

/// <summary>The server refused or could not complete an introduction (an <c>error</c> message, docs/rendezvous.md).</summary>
public sealed class PeerConnectException(string code, string message) : Exception(message)
{
    /// <summary>One of <see cref="RendezvousErrorCodes"/>: <c>forbidden</c>, <c>offline</c>, <c>rejected</c>, <c>timeout</c>, ...</summary>
    public string Code { get; } = code;
}

/// <summary>
/// The device side of the rendezvous signalling (docs/rendezvous.md "Signalling"): TURN credentials,
/// connect / offer / answer / start, the <c>nat</c> and <c>result</c> reports. Transport-agnostic: it
/// publishes through a delegate and is fed the bodies of <c>devices/{id}/rendezvous/in</c>.
/// </summary>
internal sealed class PeerRendezvous
{
    private const int MaxPending = 64;

    // How long a connect or an answer waits for the NAT classification still running (so both carry `nat`).
    private static readonly TimeSpan NatWait = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan CredentialMargin = TimeSpan.FromMinutes(5);

    private readonly PeerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Func<RendezvousMessage, CancellationToken, Task> _publish;
    private readonly Action<PeerChannel> _incoming;
    private readonly ConcurrentDictionary<string, TaskCompletionSource<RendezvousMessage>> _waiting = new(StringComparer.Ordinal);
    private PeerServers? _servers;
    private DateTimeOffset _serversExpire;
    private long _offersRejected;
    private readonly TaskCompletionSource _natDiscovery = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public PeerRendezvous(PeerOptions options, TimeProvider time, ILogger logger, Func<RendezvousMessage, CancellationToken, Task> publish, Action<PeerChannel> incoming)
    {
        _options = options;
        _time = time;
        _logger = logger;
        _publish = publish;
        _incoming = incoming;
    }

    /// <summary>This device's NAT classification, once discovered (a <see cref="NatType"/> name).</summary>
    public string? LocalNat { get; set; }

    public long OffersRejected => Interlocked.Read(ref _offersRejected);

    /// <summary>Test hook: a connect or answer started waiting for the NAT classification.</summary>
    internal Action? WaitingForNat { get; set; }

    /// <summary>One body of <c>devices/{id}/rendezvous/in</c>; malformed JSON is logged and dropped.</summary>
    public void OnMessage(ReadOnlySpan<byte> body)
    {
        RendezvousMessage? message;
        try
        {
            message = JsonSerializer.Deserialize(body, RendezvousJsonContext.Default.RendezvousMessage);
        }
        catch (JsonException e)
        {
            _logger.LogWarning(e, "Ignored a malformed rendezvous message");
            return;
        }

        if (message is null)
        {
            return;
        }

        switch (message.Type)
        {
            case RendezvousMessageTypes.Offer when message.SessionId is not null:
                _ = HandleOfferAsync(message);
                break;
            case RendezvousMessageTypes.TurnCredentials or RendezvousMessageTypes.Answer or RendezvousMessageTypes.Start or RendezvousMessageTypes.Error:
                var key = message.RequestId ?? message.SessionId;
                if (key is not null && _waiting.TryRemove(key, out var waiter))
                {
                    waiter.TrySetResult(message);
                }

                break;
        }
    }

    /// <summary>Gathers, introduces itself to <paramref name="peerId"/> and starts the session as the controlling side.</summary>
    public async Task<PeerChannel> ConnectAsync(string peerId, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        // The NAT classification may still be running: wait for it while gathering, not after.
        var natKnown = WaitForNatAsync(linked.Token);
        var servers = await GetServersAsync(linked.Token).ConfigureAwait(false);
        var local = await PeerCandidates.GatherAsync(_options, servers, LocalNat, _time, linked.Token).ConfigureAwait(false);
        PeerSession? session = null;
        try
        {
            await natKnown.ConfigureAwait(false);
            var sessionId = Convert.ToHexString(RandomNumberGenerator.GetBytes(16)).ToLowerInvariant();
            var answer = await RequestAsync(sessionId, new RendezvousMessage
            {
                Type = RendezvousMessageTypes.Connect,
                SessionId = sessionId,
                Peer = peerId,
                Candidates = local.Candidates,
                Nat = LocalNat,
            }, linked.Token).ConfigureAwait(false);
            if (answer.Type == RendezvousMessageTypes.Error)
            {
                throw new PeerConnectException(answer.Code ?? RendezvousErrorCodes.BadRequest, answer.Message ?? $"The server refused the introduction to {peerId}.");
            }

            session = CreateSession(answer, peerId, controlling: true, local);
            await session.StartAsync(linked.Token).ConfigureAwait(false);
            return session.Channel;
        }
        catch
        {
            // The session owns the socket and the allocation once it exists.
            if (session is not null)
            {
                await session.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                await local.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>Requests TURN credentials and reports them as servers; cached until shortly before they expire.</summary>
    public async Task<PeerServers> GetServersAsync(CancellationToken cancellationToken)
    {
        if (_servers is { } cached && _time.GetUtcNow() < _serversExpire)
        {
            return cached;
        }

        var requestId = Convert.ToHexString(RandomNumberGenerator.GetBytes(8)).ToLowerInvariant();
        var answer = await RequestAsync(requestId, new RendezvousMessage { Type = RendezvousMessageTypes.TurnCredentialsRequest, RequestId = requestId }, cancellationToken).ConfigureAwait(false);
        if (answer.Turn is null)
        {
            throw new PeerConnectException(answer.Code ?? RendezvousErrorCodes.Unavailable, answer.Message ?? "The server sent no TURN credentials.");
        }

        var servers = await PeerCandidates.ResolveAsync(answer.Turn, cancellationToken).ConfigureAwait(false);
        _servers = servers;
        _serversExpire = _time.GetUtcNow() + TimeSpan.FromSeconds(answer.Turn.TtlSeconds) - CredentialMargin;
        return servers;
    }

    private async Task HandleOfferAsync(RendezvousMessage offer)
    {
        var sessionId = offer.SessionId!;
        var peerId = offer.Peer ?? string.Empty;
        try
        {
            if (_options.AcceptFrom is { } accept && !accept(peerId))
            {
                Interlocked.Increment(ref _offersRejected);
                await _publish(new RendezvousMessage { Type = RendezvousMessageTypes.Reject, SessionId = sessionId, Message = "not accepted" }, CancellationToken.None).ConfigureAwait(false);
                return;
            }

            using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _time);
            var natKnown = WaitForNatAsync(timeout.Token);
            var servers = await GetServersAsync(timeout.Token).ConfigureAwait(false);
            var local = await PeerCandidates.GatherAsync(_options, servers, LocalNat, _time, timeout.Token).ConfigureAwait(false);
            PeerSession session;
            try
            {
                await natKnown.ConfigureAwait(false);
                var start = await RequestAsync(sessionId, new RendezvousMessage
                {
                    Type = RendezvousMessageTypes.Answer,
                    SessionId = sessionId,
                    Candidates = local.Candidates,
                    Nat = LocalNat,
                }, timeout.Token).ConfigureAwait(false);
                if (start.Type != RendezvousMessageTypes.Start)
                {
                    throw new PeerConnectException(start.Code ?? RendezvousErrorCodes.BadRequest, start.Message ?? "The introduction failed.");
                }

                session = CreateSession(offer, peerId, controlling: false, local);
            }
            catch
            {
                await local.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            try
            {
                await session.StartAsync(timeout.Token).ConfigureAwait(false);
            }
            catch
            {
                await session.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            _incoming(session.Channel);
        }
#pragma warning disable CA1031 // An offer that fails ends here: it is logged, never thrown into the MQTT loop.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogWarning(e, "Offer {SessionId} from {Peer} failed", sessionId, peerId);
        }
    }

    private PeerSession CreateSession(RendezvousMessage message, string peerId, bool controlling, PeerLocal local)
    {
        byte[] key;
        try
        {
            key = Convert.FromBase64String(message.Key ?? string.Empty);
        }
        catch (FormatException)
        {
            key = [];
        }

        if (key.Length == 0)
        {
            throw new PeerConnectException(RendezvousErrorCodes.BadRequest, "The server sent no session key.");
        }

        var setup = new PeerSessionSetup(message.SessionId!, peerId, key, controlling, message.Candidates ?? [], LocalNat, message.Nat);
        return new PeerSession(setup, local, _options, _time, OnResult);
    }

    private void OnResult(PeerSession session, string path, long? milliseconds)
    {
        _ = PublishQuietlyAsync(new RendezvousMessage
        {
            Type = RendezvousMessageTypes.Result,
            SessionId = session.Setup.SessionId,
            Path = path,
            MillisecondsToDirect = milliseconds,
        });
    }

    /// <summary>Reports this device's NAT classification (docs/rendezvous.md §4, the <c>nat</c> message).</summary>
    public Task ReportNatAsync(NatType type, CancellationToken cancellationToken)
    {
        LocalNat = type.ToString();
        NatDiscoveryEnded();
        return _publish(new RendezvousMessage { Type = RendezvousMessageTypes.NatReport, Nat = LocalNat }, cancellationToken);
    }

    /// <summary>The classification finished (with or without a result): sessions stop waiting for it.</summary>
    public void NatDiscoveryEnded() => _natDiscovery.TrySetResult();

    /// <summary>
    /// A connect or answer without <c>nat</c> would leave the server and the peer guessing (birthday probing
    /// needs both sides' types), so wait for a classification under way, but at most <see cref="NatWait"/>.
    /// </summary>
    private async Task WaitForNatAsync(CancellationToken cancellationToken)
    {
        if (LocalNat is not null || !_options.ReportNat)
        {
            return;
        }

        try
        {
            WaitingForNat?.Invoke();
            await _natDiscovery.Task.WaitAsync(NatWait, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _logger.LogDebug("Introducing without a NAT classification: none within {Wait}", NatWait);
        }
    }

    private async Task PublishQuietlyAsync(RendezvousMessage message)
    {
        try
        {
            await _publish(message, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A lost metrics report is not worth a fault.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogDebug(e, "Could not publish the rendezvous {Type}", message.Type);
        }
    }

    private async Task<RendezvousMessage> RequestAsync(string key, RendezvousMessage request, CancellationToken cancellationToken)
    {
        if (_waiting.Count >= MaxPending)
        {
            throw new PeerConnectException(RendezvousErrorCodes.RateLimited, "Too many rendezvous requests in flight.");
        }

        var waiter = new TaskCompletionSource<RendezvousMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiting[key] = waiter;
        try
        {
            await _publish(request, cancellationToken).ConfigureAwait(false);
            return await waiter.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _waiting.TryRemove(key, out _);
        }
    }
}
