using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using static Relay.Server.Primitives.PrometheusText;

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
}

/// <summary>
/// Meter <c>Relay.Server.Turn</c>. As with STUN, the hot path increments slots in fixed arrays; observable
/// instruments and the Prometheus endpoint read them, so counting costs nothing per packet.
/// </summary>
internal sealed class TurnMetrics
{
    public const string MeterName = "Relay.Turn";

    private static readonly string[] MethodNames = ["allocate", "refresh", "create_permission", "channel_bind", "connect", "connection_bind", "other"];
    private static readonly int[] Codes = [200, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 508, 0];
    private static readonly string[] DropNames = ["no_allocation", "no_permission", "no_channel", "bandwidth", "client_backpressure", "send_failed", "too_large", "malformed", "peer_denied"];
    private static readonly string[] LimitNames = ["allocations_per_user", "allocations", "relay_ports", "permissions", "channels", "tcp_connections", "reservations", "tcp_bandwidth"];
    private static readonly string[] DirectionNames = ["client_to_peer", "peer_to_client"];

    private readonly long[] _requests = new long[MethodNames.Length];
    private readonly long[] _responses = new long[Codes.Length];
    private readonly long[] _drops = new long[DropNames.Length];
    private readonly long[] _limits = new long[LimitNames.Length];
    private readonly long[] _packets = new long[DirectionNames.Length];
    private readonly long[] _bytes = new long[DirectionNames.Length];
    private long _allocations;
    private long _allocationsCreated;
    private long _dualAllocationsCreated;
    private long _reservationsIssued;
    private long _reservationsRedeemed;

    public TurnMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(MeterName);
        meter.CreateObservableUpDownCounter("relay.turn.allocations", () => Volatile.Read(ref _allocations), "{allocation}", "Live TURN allocations.");
        meter.CreateObservableCounter("relay.turn.allocations.created", () => Volatile.Read(ref _allocationsCreated), "{allocation}", "TURN allocations created.");
        meter.CreateObservableCounter("relay.turn.reservations", () => new Measurement<long>[] { new(Volatile.Read(ref _reservationsIssued), new KeyValuePair<string, object?>("outcome", "issued")), new(Volatile.Read(ref _reservationsRedeemed), new KeyValuePair<string, object?>("outcome", "redeemed")) }, "{reservation}", "Relay ports reserved by EVEN-PORT and redeemed by RESERVATION-TOKEN.");
        meter.CreateObservableCounter("relay.turn.requests", () => Observe(_requests, MethodNames, "method"), "{request}", "TURN requests, by method.");
        meter.CreateObservableCounter("relay.turn.responses", () => Observe(_responses, CodeNames(), "code"), "{response}", "TURN responses, by code.");
        meter.CreateObservableCounter("relay.turn.drops", () => Observe(_drops, DropNames, "reason"), "{packet}", "Relayed packets and TURN messages dropped, by reason.");
        meter.CreateObservableCounter("relay.turn.limit_hits", () => Observe(_limits, LimitNames, "limit"), "{request}", "Requests refused by a configured limit.");
        meter.CreateObservableCounter("relay.turn.relayed.packets", () => Observe(_packets, DirectionNames, "direction"), "{packet}", "Packets relayed, by direction.");
        meter.CreateObservableCounter("relay.turn.relayed.bytes", () => Observe(_bytes, DirectionNames, "direction"), "By", "Application bytes relayed, by direction.");
    }

    public long Allocations => Volatile.Read(ref _allocations);

    public long AllocationsCreated => Volatile.Read(ref _allocationsCreated);

    public void AllocationCreated(bool dual)
    {
        Interlocked.Increment(ref _allocations);
        Interlocked.Increment(ref _allocationsCreated);
        if (dual)
        {
            Interlocked.Increment(ref _dualAllocationsCreated);
        }
    }

    /// <summary>Allocations that got an IPv6 relayed address next to the IPv4 one (RFC 8656 §7.2).</summary>
    public long DualAllocationsCreated => Volatile.Read(ref _dualAllocationsCreated);

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

    public void WritePrometheus(StringBuilder output)
    {
        WriteFamily(output, "relay_turn_allocations", "Live TURN allocations.", "gauge", [new("", Allocations)]);
        WriteFamily(output, "relay_turn_allocations_created_total", "TURN allocations created; dual ones have an IPv4 and an IPv6 relayed address.", "counter", [new("kind=\"single\"", Volatile.Read(ref _allocationsCreated) - Volatile.Read(ref _dualAllocationsCreated)), new("kind=\"dual\"", Volatile.Read(ref _dualAllocationsCreated))]);
        WriteFamily(output, "relay_turn_reservations_total", "Relay ports reserved by EVEN-PORT and redeemed by RESERVATION-TOKEN.", "counter", [new("outcome=\"issued\"", Volatile.Read(ref _reservationsIssued)), new("outcome=\"redeemed\"", Volatile.Read(ref _reservationsRedeemed))]);
        WriteFamily(output, "relay_turn_requests_total", "TURN requests, by method.", "counter", Labelled(_requests, MethodNames, "method"));
        WriteFamily(output, "relay_turn_responses_total", "TURN responses, by code (200 is success).", "counter", Labelled(_responses, CodeNames(), "code"));
        WriteFamily(output, "relay_turn_drops_total", "Relayed packets and TURN messages dropped, by reason.", "counter", Labelled(_drops, DropNames, "reason"));
        WriteFamily(output, "relay_turn_limit_hits_total", "Requests refused by a configured limit.", "counter", Labelled(_limits, LimitNames, "limit"));
        WriteFamily(output, "relay_turn_relayed_packets_total", "Packets relayed, by direction.", "counter", Labelled(_packets, DirectionNames, "direction"));
        WriteFamily(output, "relay_turn_relayed_bytes_total", "Application bytes relayed, by direction.", "counter", Labelled(_bytes, DirectionNames, "direction"));
    }

    private static string[] CodeNames() => Codes.Select(static c => c == 0 ? "other" : c.ToString(CultureInfo.InvariantCulture)).ToArray();
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
