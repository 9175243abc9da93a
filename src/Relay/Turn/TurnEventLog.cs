using Relay.Protocol.Stun;
using Relay.Server.Primitives;

namespace Relay.Server.Turn;

/// <summary>
/// The TURN log lines a client can cause at will (review M6): refused requests (401, 438, 437...), denied
/// peers (403), limits hit (486, 508). Each is counted in <see cref="TurnMetrics"/> by its caller every
/// time; the log gets at most one line per kind per 10 s, with the number held back since the last one,
/// and user names from the wire are length-capped and escaped (<see cref="LogText"/>).
/// </summary>
internal sealed class TurnEventLog
{
    private static readonly int LimitCount = Enum.GetValues<TurnLimit>().Length;

    private readonly LogThrottle _throttle;
    private readonly ILogger _logger;

    public TurnEventLog(TimeProvider time, ILogger logger)
    {
        _logger = logger;

        // One slot per limit, then refusals, then denied peers, then paced TCP connections.
        _throttle = new LogThrottle(LimitCount + 3, TimeSpan.FromSeconds(10), time);
    }

    private int RefusedSlot => LimitCount;

    private int PeerDeniedSlot => LimitCount + 1;

    private int PacedSlot => LimitCount + 2;

    /// <summary>A limit refused a request (the caller counted it in <c>limit_hits</c>).</summary>
    public void LimitHit(TurnLimit limit, in StunAddress client, string user, int code)
    {
        if (_throttle.TryEnter((int)limit, out var suppressed))
        {
            TurnLog.LogLimitHit(_logger, limit, client, LogText.Safe(user), code, suppressed);
        }
    }

    /// <summary>A request failed authentication or a check before its method ran (counted in <c>responses</c>).</summary>
    public void Refused(string method, in StunAddress client, int code)
    {
        if (_logger.IsEnabled(LogLevel.Debug) && _throttle.TryEnter(RefusedSlot, out var suppressed))
        {
            TurnLog.LogRefused(_logger, method, client, code, suppressed);
        }
    }

    /// <summary>The peer policy refused a peer (counted in <c>drops{reason="peer_denied"}</c>).</summary>
    public void PeerDenied(in StunAddress peer, in StunAddress client)
    {
        if (_throttle.TryEnter(PeerDeniedSlot, out var suppressed))
        {
            TurnLog.LogPeerDenied(_logger, peer, client, suppressed);
        }
    }

    /// <summary>An RFC 6062 connection was paced to the bandwidth cap (counted in <c>limit_hits{limit="tcp_bandwidth"}</c>).</summary>
    public void TcpPaced(in StunAddress peer, long cap)
    {
        if (_throttle.TryEnter(PacedSlot, out var suppressed))
        {
            TurnLog.LogTcpPaced(_logger, peer, cap, suppressed);
        }
    }
}
