using System.Diagnostics.Metrics;
using System.Globalization;
using static Relay.Server.Primitives.SlotMeasurements;

namespace Relay.Server.Turn;

/// <summary>Why relayed data or a TURN message was dropped without an answer.</summary>
internal enum TurnDropReason : byte
{
    NoAllocation,
    NoPermission,
    NoChannel,
    Bandwidth,
    ClientBackpressure,
    SendFailed,
    TooLarge,
    Malformed,
    PeerDenied,
}

/// <summary>A limit that refused a request, and so a 486 or 508 answer.</summary>
internal enum TurnLimit : byte
{
    AllocationsPerUser,
    Allocations,
    RelayPorts,
    Permissions,
    Channels,
    TcpConnections,
    Reservations,

    /// <summary>An RFC 6062 data connection paused because its allocation used its bandwidth budget.</summary>
    TcpBandwidth,

    /// <summary>Allocations one client address (IPv4, or IPv6 /64) may hold: Relay:Turn:MaxAllocationsPerIp.</summary>
    AllocationsPerIp,
}

/// <summary>
/// Meter <c>Relay.Turn</c>. As with STUN, the hot path increments slots in fixed arrays and the observable
/// instruments read them (for <c>/metrics</c> and OTLP alike), so counting costs nothing per packet.
/// </summary>
internal sealed class TurnMetrics
{
    public const string MeterName = "Relay.Turn";

    private static readonly string[] MethodNames = ["allocate", "refresh", "create_permission", "channel_bind", "connect", "connection_bind", "other"];
    private static readonly int[] Codes = [200, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 508, 0];
    private static readonly string[] DropNames = ["no_allocation", "no_permission", "no_channel", "bandwidth", "client_backpressure", "send_failed", "too_large", "malformed", "peer_denied"];
    private static readonly string[] LimitNames = ["allocations_per_user", "allocations", "relay_ports", "permissions", "channels", "tcp_connections", "reservations", "tcp_bandwidth", "allocations_per_ip"];
    private static readonly string[] DirectionNames = ["client_to_peer", "peer_to_client"];

    // Allocations created, by kind: single, or dual (an IPv4 and an IPv6 relayed address, RFC 8656 §7.2).
    private static readonly string[] KindNames = ["single", "dual"];
    private static readonly string[] CodeNames = [.. Codes.Select(static c => c == 0 ? "other" : c.ToString(CultureInfo.InvariantCulture))];

    private readonly long[] _requests = new long[MethodNames.Length];
    private readonly long[] _responses = new long[Codes.Length];
    private readonly long[] _drops = new long[DropNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _packets = new long[DirectionNames.Length];
    private readonly long[] _bytes = new long[DirectionNames.Length];
    private long _allocations;
    private readonly long[] _created = new long[KindNames.Length];
    private long _reservationsIssued;
    private long _reservationsRedeemed;

    public TurnMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableUpDownCounter("relay.turn.allocations", () => Volatile.Read(ref _allocations), "{allocation}", "Live TURN allocations.");
        meter.CreateObservableCounter("relay.turn.allocations.created", () => Labelled(_created, KindNames, "kind"), "{allocation}", "TURN allocations created; dual ones have an IPv4 and an IPv6 relayed address.");
        meter.CreateObservableCounter("relay.turn.reservations", () => Labelled("outcome", ("issued", Volatile.Read(ref _reservationsIssued)), ("redeemed", Volatile.Read(ref _reservationsRedeemed))), "{reservation}", "Relay ports reserved by EVEN-PORT and redeemed by RESERVATION-TOKEN.");
        meter.CreateObservableCounter("relay.turn.requests", () => Labelled(_requests, MethodNames, "method"), "{request}", "TURN requests, by method.");
        meter.CreateObservableCounter("relay.turn.responses", () => Labelled(_responses, CodeNames, "code"), "{response}", "TURN responses, by code (200 is success).");
        meter.CreateObservableCounter("relay.turn.drops", () => Labelled(_drops, DropNames, "reason"), "{packet}", "Relayed packets and TURN messages dropped, by reason.");
        meter.CreateObservableCounter("relay.turn.limit_hits", () => Labelled(_limits, LimitNames, "limit"), "{request}", "Requests refused by a configured limit.");
        meter.CreateObservableCounter("relay.turn.relayed.packets", () => Labelled(_packets, DirectionNames, "direction"), "{packet}", "Packets relayed, by direction.");
        meter.CreateObservableCounter("relay.turn.relayed.bytes", () => Labelled(_bytes, DirectionNames, "direction"), "By", "Application bytes relayed, by direction.");
    }

    public long Allocations => Volatile.Read(ref _allocations);

    public long AllocationsCreated => Volatile.Read(ref _created[0]) + Volatile.Read(ref _created[1]);

    public void AllocationCreated(bool dual)
    {
        Interlocked.Increment(ref _allocations);
        Interlocked.Increment(ref _created[dual ? 1 : 0]);
    }

    /// <summary>Allocations that got an IPv6 relayed address next to the IPv4 one (RFC 8656 §7.2).</summary>
    public long DualAllocationsCreated => Volatile.Read(ref _created[1]);

    public void AllocationDeleted() => Interlocked.Decrement(ref _allocations);

    /// <summary>EVEN-PORT with R=1 set a port aside (RFC 8656 §7.2), or an Allocate took one with its token.</summary>
    public void Reservation(bool redeemed) => Interlocked.Increment(ref redeemed ? ref _reservationsRedeemed : ref _reservationsIssued);

    public long ReservationsRedeemed => Volatile.Read(ref _reservationsRedeemed);

    public void Request(StunMethodSlot method) => Interlocked.Increment(ref _requests[(int)method]);

    public void Response(int code)
    {
        var index = Array.IndexOf(Codes, code, 0, Codes.Length - 1);
        Interlocked.Increment(ref _responses[index < 0 ? Codes.Length - 1 : index]);
    }

    public void Drop(TurnDropReason reason) => Interlocked.Increment(ref _drops[(int)reason]);

    public void LimitHit(TurnLimit limit) => Interlocked.Increment(ref _limits[(int)limit]);

    public void Relayed(bool toPeer, int bytes)
    {
        var direction = toPeer ? 0 : 1;
        Interlocked.Increment(ref _packets[direction]);
        Interlocked.Add(ref _bytes[direction], bytes);
    }

    public long Drops(TurnDropReason reason) => Volatile.Read(ref _drops[(int)reason]);

    public long LimitHits(TurnLimit limit) => Volatile.Read(ref _limits[(int)limit]);

    public long RelayedPackets(bool toPeer) => Volatile.Read(ref _packets[toPeer ? 0 : 1]);

    public long Responses(int code)
    {
        var index = Array.IndexOf(Codes, code, 0, Codes.Length - 1);
        return Volatile.Read(ref _responses[index < 0 ? Codes.Length - 1 : index]);
    }
}

/// <summary>Request counter slots.</summary>
internal enum StunMethodSlot : byte
{
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Connect,
    ConnectionBind,
    Other,
}
