using System.Collections.Concurrent;
using System.Security.Cryptography;
using Relay.Protocol.Stun;

namespace Relay.Server.Turn;

/// <summary>What <see cref="TurnAllocationTable{TAllocation, TReservation}"/> needs of an allocation.</summary>
internal interface ITurnAllocationEntry
{
    /// <summary>The key: one allocation per 5-tuple (RFC 8656 §2.2).</summary>
    TurnFiveTuple FiveTuple { get; }

    /// <summary>Whose quota the allocation counts against.</summary>
    string Username { get; }

    /// <summary>When the allocation expires unless refreshed, on the relay's millisecond clock.</summary>
    long ExpiresAtMs { get; }

    /// <summary>Marks the allocation closed; true for the one caller that gets to release it.</summary>
    bool TryClose();

    /// <summary>Drops what expired inside the allocation (permissions, channels) by <paramref name="nowMs"/>.</summary>
    void Sweep(long nowMs);
}

/// <summary>
/// The allocations of the relay by 5-tuple (RFC 8656 §2.2), the quotas they count against (on the
/// server, per user and per client address), and the ports an EVEN-PORT with R=1 set aside for a later
/// RESERVATION-TOKEN (RFC 8656 §7.2); the once-a-second sweep expires all three.
/// </summary>
/// <remarks>
/// Time is passed in, in milliseconds of the relay's monotonic clock, as <see cref="TurnAllocation"/>'s
/// methods take it. The table is generic over the allocation and the reserved resource (a bound socket)
/// so that its rules are unit-tested without sockets; the relay uses
/// <c>TurnAllocationTable&lt;TurnAllocation, Socket&gt;</c>. What deleting an allocation releases besides
/// its entry and its quota (sockets, loop registrations, metrics) is the owner's, given as
/// <c>deleted</c>, which runs once per allocation.
/// </remarks>
internal sealed class TurnAllocationTable<TAllocation, TReservation> : IDisposable
    where TAllocation : class, ITurnAllocationEntry
    where TReservation : class, IDisposable
{
    /// <summary>How long a reserved port waits for its RESERVATION-TOKEN (RFC 8656 §7.2: about 30 s).</summary>
    public const long ReservationLifetimeMs = 30_000;

    private readonly ConcurrentDictionary<TurnFiveTuple, TAllocation> _allocations = new();
    private readonly ConcurrentDictionary<ulong, Reservation> _reservations = new();
    private readonly Dictionary<string, int> _allocationsPerUser = new(StringComparer.Ordinal);

    // Entries exist only while their count is above zero: bounded by the allocations, not by every
    // user or address ever seen.
    private readonly Dictionary<StunAddress, int> _allocationsPerSource = [];
    private readonly Lock _quotaGate = new();
    private readonly int _maxAllocations;
    private readonly int _maxAllocationsPerUser;
    private readonly int _maxAllocationsPerSource;
    private readonly Action<TAllocation> _deleted;

    // Quota taken: allocations in the table plus Allocates between TryReserveQuota and TryAdd.
    private long _reservedAllocations;

    /// <param name="maxAllocations">Allocations on the server; also the bound on outstanding reservations.</param>
    /// <param name="maxAllocationsPerUser">Allocations one user (<see cref="QuotaUser"/>) may hold.</param>
    /// <param name="maxAllocationsPerIp">Allocations one client address (<see cref="QuotaSource"/>) may hold.</param>
    /// <param name="deleted">Releases what a deleted allocation held; called once per allocation, after it left the table.</param>
    public TurnAllocationTable(int maxAllocations, int maxAllocationsPerUser, int maxAllocationsPerIp, Action<TAllocation> deleted)
    {
        _maxAllocations = maxAllocations;
        _maxAllocationsPerUser = maxAllocationsPerUser;
        _maxAllocationsPerSource = maxAllocationsPerIp;
        _deleted = deleted;
    }

    public int Count => _allocations.Count;

    public int ReservationCount => _reservations.Count;

    /// <summary>
    /// Whether another port may be reserved. Reservations outlive the allocations that made them, so
    /// they have a bound of their own.
    /// </summary>
    public bool HasRoomForReservation => _reservations.Count < _maxAllocations;

    /// <summary>The allocation of a 5-tuple, if any.</summary>
    public TAllocation? Find(in TurnFiveTuple fiveTuple) => _allocations.TryGetValue(fiveTuple, out var allocation) ? allocation : null;

    /// <summary>
    /// Takes one allocation of quota for <paramref name="username"/> from <paramref name="client"/> before
    /// its sockets are bound; null when granted, else the limit that refused it (486, RFC 8656 §7.2).
    /// Give it back with <see cref="ReleaseQuota"/> when the Allocate fails; a deleted allocation gives
    /// its own back.
    /// </summary>
    public TurnLimit? TryReserveQuota(string username, in StunAddress client)
    {
        var user = QuotaUser(username);
        var source = QuotaSource(client);
        lock (_quotaGate)
        {
            if (_reservedAllocations >= _maxAllocations)
            {
                return TurnLimit.Allocations;
            }

            _allocationsPerUser.TryGetValue(user, out var count);
            if (count >= _maxAllocationsPerUser)
            {
                return TurnLimit.AllocationsPerUser;
            }

            _allocationsPerSource.TryGetValue(source, out var fromSource);
            if (fromSource >= _maxAllocationsPerSource)
            {
                return TurnLimit.AllocationsPerIp;
            }

            _allocationsPerUser[user] = count + 1;
            _allocationsPerSource[source] = fromSource + 1;
            _reservedAllocations++;
            return null;
        }
    }

    /// <summary>Gives back what <see cref="TryReserveQuota"/> took for the same username and client.</summary>
    public void ReleaseQuota(string username, in StunAddress client)
    {
        var user = QuotaUser(username);
        var source = QuotaSource(client);
        lock (_quotaGate)
        {
            _reservedAllocations--;
            Decrement(_allocationsPerUser, user);
            Decrement(_allocationsPerSource, source);
        }
    }

    /// <summary>
    /// Whose per-user quota a USERNAME counts against: the part after the first ':'. A REST username
    /// (draft-uberti-behave-turn-rest-00 §2.2, <c>expiry:user</c>) changes with every credential minted,
    /// so keying on all of it gave each credential a quota of its own (review M5); coturn strips the
    /// timestamp the same way. Static usernames cannot contain ':' (<c>user:password</c> entries split at
    /// the first one), so they key on themselves; so does a bare-expiry REST username, which names
    /// nobody (the per-IP cap still bounds it).
    /// </summary>
    public static string QuotaUser(string username)
    {
        var colon = username.IndexOf(':', StringComparison.Ordinal);
        return colon < 0 ? username : username[(colon + 1)..];
    }

    /// <summary>
    /// Whose per-IP cap a client counts against: its IPv4 address, or its IPv6 /64 (one subscriber's
    /// prefix; a host picks any address in it at will). The port is not part of it.
    /// </summary>
    public static StunAddress QuotaSource(in StunAddress client)
    {
        if (client.IsIPv4)
        {
            return client.WithPort(0);
        }

        Span<byte> bytes = stackalloc byte[16];
        client.WriteAddressBytes(bytes);
        bytes[8..].Clear();
        return StunAddress.FromIPv6(bytes, 0);
    }

    private static void Decrement<TKey>(Dictionary<TKey, int> counts, TKey key)
        where TKey : notnull
    {
        if (counts.TryGetValue(key, out var count))
        {
            if (count <= 1)
            {
                counts.Remove(key);
            }
            else
            {
                counts[key] = count - 1;
            }
        }
    }

    /// <summary>Adds an allocation whose quota is reserved; false when its 5-tuple already has one.</summary>
    public bool TryAdd(TAllocation allocation) => _allocations.TryAdd(allocation.FiveTuple, allocation);

    /// <summary>Closes the allocation, removes it, returns its quota and releases it; once, whoever calls.</summary>
    public void Delete(TAllocation allocation)
    {
        if (!allocation.TryClose())
        {
            return;
        }

        _allocations.TryRemove(new KeyValuePair<TurnFiveTuple, TAllocation>(allocation.FiveTuple, allocation));
        ReleaseQuota(allocation.Username, allocation.FiveTuple.Client);
        _deleted(allocation);
    }

    /// <summary>Holds a reserved port until <see cref="ReservationLifetimeMs"/> after <paramref name="nowMs"/>; returns the token naming it (never 0).</summary>
    public ulong AddReservation(TReservation reserved, long nowMs)
    {
        while (true)
        {
            var token = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
            if (token != 0 && _reservations.TryAdd(token, new Reservation(reserved, nowMs + ReservationLifetimeMs)))
            {
                return token;
            }
        }
    }

    /// <summary>The reserved resource a token names, handed over once; null for an unknown, expired or redeemed token.</summary>
    public TReservation? TakeReservation(ulong token) =>
        _reservations.TryRemove(token, out var reservation) ? reservation.Reserved : null;

    /// <summary>
    /// Disposes expired reservations and deletes expired allocations; the others drop their own expired
    /// permissions and channels.
    /// </summary>
    public void Sweep(long nowMs)
    {
        foreach (var (token, reservation) in _reservations)
        {
            if (reservation.ExpiresAtMs <= nowMs && _reservations.TryRemove(token, out _))
            {
                reservation.Reserved.Dispose();
            }
        }

        // Enumerating the dictionary itself takes no locks and copies nothing; .Values would lock
        // every bucket and copy all allocations once a second.
        foreach (var (_, allocation) in _allocations)
        {
            if (allocation.ExpiresAtMs <= nowMs)
            {
                Delete(allocation);
            }
            else
            {
                allocation.Sweep(nowMs);
            }
        }
    }

    /// <summary>Deletes every allocation and disposes every reservation (shutdown).</summary>
    public void Dispose()
    {
        foreach (var (_, allocation) in _allocations)
        {
            Delete(allocation);
        }

        foreach (var token in _reservations.Keys)
        {
            TakeReservation(token)?.Dispose();
        }
    }

    private readonly record struct Reservation(TReservation Reserved, long ExpiresAtMs);
}
