using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.DeviceClient.Peers;

internal sealed partial class PeerSession
{
    private const int MaxCheckLength = 160;

    /// <summary>
    /// A connectivity check or its answer (RFC 8445 §7.2-§7.3, docs/rendezvous.md): Binding with USERNAME =
    /// session id, MESSAGE-INTEGRITY keyed with the raw session key and FINGERPRINT. Anything that fails
    /// either is dropped and counted; indications (keepalives) need no answer.
    /// </summary>
    private void OnStun(LocalSocket? local, IPEndPoint source, ReadOnlySpan<byte> datagram)
    {
        if (StunMessageReader.TryParse(datagram, Limits, out var message, out _) != System.Buffers.OperationStatus.Done
            || message.Header.Method != (ushort)StunMethod.Binding)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }

        var stunClass = message.Header.Class;
        if (stunClass == StunClass.Indication)
        {
            return;
        }

        // RFC 8489 §14.5/§14.7: FINGERPRINT first (cheap, says it is ours), then the HMAC over the key.
        if (!message.HasFingerprint || !message.VerifyFingerprint() || !message.HasMessageIntegrity || !message.VerifyMessageIntegrity(_setup.Key))
        {
            Interlocked.Increment(ref _integrityFailures);
            return;
        }

        if (stunClass == StunClass.Request)
        {
            if (!message.TryGetAttribute(StunAttributeType.Username, out var username) || !username.SequenceEqual(_username))
            {
                Interlocked.Increment(ref _integrityFailures);
                return;
            }

            OnCheckRequest(local, source, message.Header.TransactionId, message.HasAttribute(StunAttributeType.UseCandidate));
        }
        else if (stunClass == StunClass.SuccessResponse)
        {
            OnCheckResponse(local, source, message.Header.TransactionId);
        }
    }

    private void OnCheckRequest(LocalSocket? local, IPEndPoint source, StunTransactionId transactionId, bool useCandidate)
    {
        Interlocked.Increment(ref _checksReceived);
        var response = WriteCheck(StunClass.SuccessResponse, transactionId, source, nominate: false);
        _ = SendStunAsync(local, source, response);
        if (local is null || _options.PathPolicy == PeerPathPolicy.RelayOnly)
        {
            return; // a check through our relay proves nothing about a direct path
        }

        var triggered = false;
        var select = false;
        lock (_gate)
        {

            // RFC 8445 §7.3.1.3: a check from an address no candidate named is a peer-reflexive candidate,
            // under the same rule as the candidates the server relayed.
            if (!Probeable(source.Address))
            {
                _channel.OnCandidateDropped();
                return;
            }

            if (_knownRemotes.Add(source))
            {
                if (_learned < MaxLearnedCandidates)
                {
                    _learned++;
                    _checkTargets.Add(source);
                    Interlocked.Increment(ref _prflxLearned);
                }
            }

            // RFC 8445 §7.3.1.4: a triggered check proves the other direction of this pair.
            triggered = !_valid.Contains((local, source));
            if (useCandidate && !_setup.Controlling && (_direct is null || !_direct.Value.Remote.Equals(source)))
            {
                // RFC 8445 §7.3.1.5: the nomination takes effect once the pair is valid, i.e. our own check to it
                // got an authentic answer from it. MESSAGE-INTEGRITY covers the request, not its source address:
                // a captured check replayed from a third host's address would otherwise move the path there.
                if (triggered)
                {
                    _nominatedPending = (local, source);
                }
                else
                {
                    select = true;
                }
            }
        }

        if (triggered)
        {
            SendCheck(local, source, TransactionKind.Check);
        }

        if (select)
        {
            Select(local, source);
        }
    }

    private void OnCheckResponse(LocalSocket? local, IPEndPoint source, StunTransactionId transactionId)
    {
        Transaction transaction;
        lock (_gate)
        {
            if (!_transactions.Remove(transactionId, out transaction))
            {
                return;
            }
        }

        _channel.AddRttSample(_time.GetElapsedTime(transaction.SentAt));
        if (local is null || transaction.Socket is null)
        {
            return;
        }

        var nominate = false;
        var nominated = false;
        lock (_gate)
        {
            // RFC 8445 §7.2.5.3.2: the valid pair is built from where the answer came from.
            _valid.Add((local, source));
            if (_nominatedPending is { } pending && pending.Socket == local && pending.Remote.Equals(source))
            {
                // §7.3.1.5: the controlling side nominated this pair before it was valid; now it is.
                _nominatedPending = null;
                nominated = true;
            }

            if (transaction.Kind == TransactionKind.Keepalive)
            {
                _keepaliveOutstanding = false;
                _keepaliveMisses = 0;
                return;
            }

            if (transaction.Kind != TransactionKind.Nominate && _setup.Controlling && _direct is null && _nominating is null && _options.PathPolicy != PeerPathPolicy.RelayOnly)
            {
                _nominating = (local, source);
                _lastNominate = _time.GetTimestamp();
                nominate = true;
            }
        }

        if (transaction.Kind == TransactionKind.Nominate || nominated)
        {
            Select(local, source);
        }
        else if (nominate)
        {
            // RFC 8445 §8.1.1: the controlling side nominates the first valid pair by repeating its check with USE-CANDIDATE.
            SendCheck(local, source, TransactionKind.Nominate);
        }
    }

    private void Select(LocalSocket local, IPEndPoint remote)
    {
        long? milliseconds = null;
        lock (_gate)
        {
            if (_direct is { } current && current.Socket == local && current.Remote.Equals(remote))
            {
                return;
            }

            var changed = _direct is null;
            _direct = (local, remote);
            _nominating = null;
            _keepaliveMisses = 0;
            _keepaliveOutstanding = false;
            _lastKeepalive = _time.GetTimestamp();
            if (!changed)
            {
                return;
            }

            if (!_resultReported)
            {
                _resultReported = true;
                milliseconds = (long)_time.GetElapsedTime(_startedAt).TotalMilliseconds;
            }
        }

        _channel.OnPathChanged(PeerPath.Relayed, PeerPath.Direct);
        if (milliseconds is not null)
        {
            _onResult?.Invoke(this, "direct", milliseconds);
        }
    }

    private void SendCheck(LocalSocket local, IPEndPoint remote, TransactionKind kind)
    {
        var transactionId = StunTransactionId.NewRandom();
        lock (_gate)
        {
            if (_transactions.Count >= MaxTransactions)
            {
                return; // bounded: a check we cannot track is a check we do not send
            }

            _transactions[transactionId] = new Transaction(local, remote, _time.GetTimestamp(), kind);
        }

        Interlocked.Increment(ref kind == TransactionKind.Probe ? ref _probesSent : ref _checksSent);
        if (CheckFilter is { } filter && !filter(remote))
        {
            return;
        }

        _ = SendStunAsync(local, remote, WriteCheck(StunClass.Request, transactionId, remote, kind == TransactionKind.Nominate));
    }

    private async Task SendStunAsync(LocalSocket? local, IPEndPoint remote, byte[] message)
    {
        try
        {
            if (local is not null)
            {
                await SendToAsync(local, remote, message, _stop.Token).ConfigureAwait(false);
            }
            else if (_turn is not null)
            {
                await _turn.SendAsync(remote, message, _stop.Token).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or IOException or SocketException or InvalidOperationException)
        {
            // The session is closing, or the relay is gone: a lost check, retried by the next round.
        }
    }

    /// <summary>
    /// RFC 8489 §5 / RFC 8445 §7.1: a Binding request (USERNAME, PRIORITY, ICE-CONTROLLING/-CONTROLLED
    /// with our tie-breaker, USE-CANDIDATE when nominating) or success response (XOR-MAPPED-ADDRESS of
    /// the requester), then MESSAGE-INTEGRITY (§14.5) and FINGERPRINT (§14.7), always last.
    /// </summary>
    private byte[] WriteCheck(StunClass stunClass, StunTransactionId transactionId, IPEndPoint remote, bool nominate)
    {
        Span<byte> buffer = stackalloc byte[MaxCheckLength];
        var writer = new StunMessageWriter(buffer, StunHeader.ComposeType(StunMethod.Binding, stunClass), transactionId);
        if (stunClass == StunClass.Request)
        {
            writer.WriteAttribute(StunAttributeType.Username, _username);
            writer.WriteUInt32(StunAttributeType.Priority, PeerCandidates.Priority("prflx", 0));
            Span<byte> tieBreaker = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(tieBreaker, _tieBreaker);
            writer.WriteAttribute(_setup.Controlling ? StunAttributeType.IceControlling : StunAttributeType.IceControlled, tieBreaker);
            if (nominate)
            {
                writer.WriteAttribute(StunAttributeType.UseCandidate, ReadOnlySpan<byte>.Empty);
            }
        }
        else
        {
            writer.WriteXorAddress(StunAttributeType.XorMappedAddress, StunAddress.FromEndPoint(remote));
        }

        writer.WriteMessageIntegrity(_setup.Key);
        writer.WriteFingerprint();
        return writer.Written.ToArray();
    }

    /// <summary>Paces checks (a round every 200 ms until CheckTimeout), nomination retries, keepalives and the result report.</summary>
    private async Task CheckLoopAsync()
    {
        try
        {
            if (ChecksGate is { } gate)
            {
                await gate.WaitAsync(_stop.Token).ConfigureAwait(false);
                lock (_gate)
                {
                    _startedAt = _time.GetTimestamp();
                    _checkDeadline = _startedAt + ToTimestamp(_options.CheckTimeout);
                }
            }

            if (_options.PathPolicy != PeerPathPolicy.RelayOnly)
            {
                BirthdayCompleted = BirthdayAsync();
            }

            using var timer = new PeriodicTimer(Tick, _time);
            do
            {
                OnTick();
            }
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false));
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void OnTick()
    {
        var now = _time.GetTimestamp();
        var round = ToTimestamp(CheckRound);
        List<(LocalSocket, IPEndPoint, TransactionKind)> sends = [];
        string? result = null;
        var dropped = false;
        var rechecked = false;
        var ended = false;
        lock (_gate)
        {
            var expired = now - ToTimestamp(TransactionLifetime);
            if (_transactions.Count > 0)
            {
                foreach (var (id, transaction) in _transactions)
                {
                    if (transaction.SentAt < expired)
                    {
                        _transactions.Remove(id);
                    }
                }
            }

            if (_direct is { } direct)
            {
                if (now - _lastKeepalive >= ToTimestamp(_options.KeepaliveInterval))
                {
                    _lastKeepalive = now;
                    if (_keepaliveOutstanding && ++_keepaliveMisses >= KeepaliveMissesToDrop)
                    {
                        // docs/rendezvous.md: a path that stops answering checks goes back to the relay and is re-probed.
                        _direct = null;
                        _valid.Clear();
                        _nominatedPending = null;
                        _checkDeadline = now + ToTimestamp(_options.CheckTimeout);
                        dropped = true;
                    }
                    else
                    {
                        _keepaliveOutstanding = true;
                        sends.Add((direct.Socket, direct.Remote, TransactionKind.Keepalive));
                    }
                }
            }
            else if (_options.PathPolicy != PeerPathPolicy.RelayOnly && now < _checkDeadline)
            {
                if (_nominating is { } nominating && now - _lastNominate >= round)
                {
                    _lastNominate = now;
                    sends.Add((nominating.Socket, nominating.Remote, TransactionKind.Nominate));
                }

                if (now - _lastRound >= round)
                {
                    _lastRound = now;
                    foreach (var target in _checkTargets)
                    {
                        sends.Add((_sockets[0], target, TransactionKind.Check));
                    }
                }
            }
            else if (now >= _checkDeadline)
            {
                if (_checksEndedAt != _checkDeadline)
                {
                    _checksEndedAt = _checkDeadline;
                    ended = true;
                }

                if (!_resultReported)
                {
                    _resultReported = true;
                    result = _turn is not null || _remoteRelay is not null ? "relayed" : "failed";
                }

                rechecked = Recheck(now, sends);
            }
        }

        if (dropped)
        {
            Interlocked.Increment(ref _pathDrops);
            _channel.OnPathChanged(PeerPath.Direct, PeerPath.Relayed);
        }

        foreach (var (socket, remote, kind) in sends)
        {
            SendCheck(socket, remote, kind);
        }

        if (ended)
        {
            _channel.OnChecksEnded();
        }

        if (rechecked)
        {
            Interlocked.Increment(ref _recheckRounds);
        }

        if (result is not null)
        {
            _onResult?.Invoke(this, result, null);
        }
    }

    /// <summary>
    /// docs/rendezvous.md "Keepalives": relayed after the checks ended, one round every RecheckInterval, so a
    /// path that comes back (or a mapping renewed) is found again. Bounded: one check per target and no
    /// retransmission; the nomination of a pair that answers is sent once, and a lost one is redone next round.
    /// Called under <c>_gate</c>.
    /// </summary>
    private bool Recheck(long now, List<(LocalSocket, IPEndPoint, TransactionKind)> sends)
    {
        var interval = _options.RecheckInterval;
        if (_options.PathPolicy == PeerPathPolicy.RelayOnly || interval <= TimeSpan.Zero || interval == Timeout.InfiniteTimeSpan)
        {
            return false;
        }

        // The first round is due one interval after the window of checks ended (the first, or the one after a drop).
        if (_nextRecheck <= _checkDeadline)
        {
            _nextRecheck = _checkDeadline + ToTimestamp(interval);
        }

        if (now < _nextRecheck)
        {
            return false;
        }

        _nextRecheck = now + ToTimestamp(interval);
        _nominating = null;
        foreach (var target in _checkTargets)
        {
            sends.Add((_sockets[0], target, TransactionKind.Check));
        }

        return true;
    }
}
