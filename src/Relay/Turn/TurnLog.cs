using System.Net;
using System.Net.Sockets;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>
/// The TURN relay's log events (4xxx), declared once for the several types that raise them; each type
/// logs under its own category.
/// </summary>
internal static partial class TurnLog
{
    [LoggerMessage(EventId = 4001, Level = LogLevel.Critical, Message = "A TURN relay loop failed; allocations on it no longer receive from peers")]
    public static partial void LogLoopFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Error, Message = "TURN allocation sweep failed")]
    public static partial void LogSweepFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug, Message = "TURN allocation for {Client} relayed at {Relayed}, IPv6 half {Additional} (user {User})")]
    public static partial void LogAllocationCreated(ILogger logger, StunAddress client, StunAddress relayed, string additional, string user);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Debug, Message = "TURN allocation for {Client} at {Relayed} (user {User}) deleted")]
    public static partial void LogAllocationDeleted(ILogger logger, StunAddress client, StunAddress relayed, string user);

    // 4005-4007 and 4030 are sampled by TurnEventLog: one line per kind per 10 s, with the count held back.
    [LoggerMessage(EventId = 4005, Level = LogLevel.Warning, Message = "TURN {Limit} limit hit by {Client} (user {User}); answered {Code}; {Suppressed} more since the last line (relay_turn_limit_hits_total counts all)")]
    public static partial void LogLimitHit(ILogger logger, TurnLimit limit, StunAddress client, string user, int code, long suppressed);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Information, Message = "TURN peer {Peer} refused for {Client} by the peer policy (Relay:Turn:AllowedPeers/DeniedPeers/AllowLoopbackPeers); {Suppressed} more since the last line (relay_turn_drops_total{{reason=\"peer_denied\"}} counts all)")]
    public static partial void LogPeerDenied(ILogger logger, StunAddress peer, StunAddress client, long suppressed);

    [LoggerMessage(EventId = 4007, Level = LogLevel.Debug, Message = "TURN {Method} from {Client} refused: {Code}; {Suppressed} more since the last line (relay_turn_responses_total counts all)")]
    public static partial void LogRefused(ILogger logger, string method, StunAddress client, int code, long suppressed);

    [LoggerMessage(EventId = 4008, Level = LogLevel.Error, Message = "Cannot bind a relay socket on {Endpoint}: {Error} (Relay:Turn:RelayAddresses, RelayPortMin/RelayPortMax)")]
    public static partial void LogRelayBindFailed(ILogger logger, IPEndPoint endpoint, SocketError error);

    [LoggerMessage(EventId = 4030, Level = LogLevel.Information, Message = "TURN TCP relay to {Peer}: paced to {Cap} B/s (Relay:Turn:MaxBytesPerSecondPerAllocation); {Suppressed} more connections since the last line")]
    public static partial void LogTcpPaced(ILogger logger, StunAddress peer, long cap, long suppressed);
}
