namespace Relay.Rendezvous.Introductions;

/// <summary>An offer waiting for the peer's answer.</summary>
internal sealed record PendingIntroduction(string SessionId, string Requester, string Peer, string Key, string RequesterNat, DateTimeOffset Deadline);

/// <summary>An introduction whose checks started: kept for a while so both sides' <c>result</c> can be attributed to its NAT pair.</summary>
internal sealed class StartedIntroduction(string requester, string peer, int pairIndex, DateTimeOffset forgetAt)
{
    public string Requester { get; } = requester;

    public string Peer { get; } = peer;

    public int PairIndex { get; } = pairIndex;

    public DateTimeOffset ForgetAt { get; } = forgetAt;

    /// <summary>Both sides may report; the first report counts, so a session is one attempt in the metrics.</summary>
    public bool Reported { get; set; }
}

internal enum AddIntroductionResult
{
    Added,
    DuplicateSession,
    Full,
}

internal enum ResultLookup
{
    Found,
    Unknown,
    Duplicate,
}

/// <summary>
/// The server's introductions (docs/rendezvous.md): offers pending an answer, capped at
/// <c>MaxPendingSessions</c>, and started ones remembered for <see cref="ResultWindow"/> for their
/// results, capped the same. Keyed by the requester's session id; only the named peer may answer or
/// reject, and only the two participants may report, so a device that guesses an id learns nothing.
/// Not thread-safe: one loop owns it. Expiry is a scan, run about once a second: at most
/// <c>MaxPendingSessions</c> entries each, which costs less than keeping a second, ordered index.
/// </summary>
internal sealed class IntroductionTable(int maxPending)
{
    /// <summary>How long after the start a session's result is still attributed to it.</summary>
    public static readonly TimeSpan ResultWindow = TimeSpan.FromMinutes(10);

    private readonly Dictionary<string, PendingIntroduction> _pending = new(StringComparer.Ordinal);
    private readonly Dictionary<string, StartedIntroduction> _started = new(StringComparer.Ordinal);

    public int PendingCount => _pending.Count;

    public int StartedCount => _started.Count;

    public AddIntroductionResult TryAdd(PendingIntroduction introduction)
    {
        ArgumentNullException.ThrowIfNull(introduction);
        if (_pending.ContainsKey(introduction.SessionId) || _started.ContainsKey(introduction.SessionId))
        {
            return AddIntroductionResult.DuplicateSession;
        }

        if (_pending.Count >= maxPending)
        {
            return AddIntroductionResult.Full;
        }

        _pending.Add(introduction.SessionId, introduction);
        return AddIntroductionResult.Added;
    }

    /// <summary>Removes and returns the pending introduction <paramref name="sessionId"/> if <paramref name="peer"/> is the device it was offered to.</summary>
    public bool TryTake(string sessionId, string peer, out PendingIntroduction introduction)
    {
        if (_pending.TryGetValue(sessionId, out var found) && string.Equals(found.Peer, peer, StringComparison.Ordinal))
        {
            _pending.Remove(sessionId);
            introduction = found;
            return true;
        }

        introduction = null!;
        return false;
    }

    /// <summary>Removes a pending introduction without an answer (its offer could not be delivered).</summary>
    public void Remove(string sessionId) => _pending.Remove(sessionId);

    /// <summary>Remembers a started session for its results; when full, the session's results go uncounted.</summary>
    public void Started(string sessionId, StartedIntroduction started)
    {
        if (_started.Count < maxPending)
        {
            _started[sessionId] = started;
        }
    }

    /// <summary>Finds the started session <paramref name="sessionId"/> for a result from <paramref name="device"/>, marking it reported.</summary>
    public ResultLookup TryReport(string sessionId, string device, out StartedIntroduction started)
    {
        if (!_started.TryGetValue(sessionId, out started!) || (!string.Equals(started.Requester, device, StringComparison.Ordinal) && !string.Equals(started.Peer, device, StringComparison.Ordinal)))
        {
            return ResultLookup.Unknown;
        }

        if (started.Reported)
        {
            return ResultLookup.Duplicate;
        }

        started.Reported = true;
        return ResultLookup.Found;
    }

    /// <summary>Removes and returns the offers whose deadline passed; forgets started sessions past their window.</summary>
    public List<PendingIntroduction> Expire(DateTimeOffset now)
    {
        var expired = new List<PendingIntroduction>();
        foreach (var introduction in _pending.Values)
        {
            if (introduction.Deadline <= now)
            {
                expired.Add(introduction);
            }
        }

        foreach (var introduction in expired)
        {
            _pending.Remove(introduction.SessionId);
        }

        List<string>? forget = null;
        foreach (var (id, started) in _started)
        {
            if (started.ForgetAt <= now)
            {
                (forget ??= []).Add(id);
            }
        }

        foreach (var id in forget ?? [])
        {
            _started.Remove(id);
        }

        return expired;
    }
}
