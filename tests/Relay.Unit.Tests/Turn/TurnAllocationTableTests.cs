using Relay.Protocol.Stun;
using Relay.Rendezvous.Stun;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

/// <summary>
/// The allocation table's rules without sockets or threads: quotas on the server and per user (486,
/// RFC 8656 §7.2), RESERVATION-TOKEN handling (§7.2), and the sweep that expires allocations and
/// reservations. Time is the table's millisecond clock, moved by hand.
/// </summary>
public sealed class TurnAllocationTableTests
{
    private const long Start = 1_000_000;

    private static readonly StunAddress Client = StunAddress.FromEndPoint(new System.Net.IPEndPoint(System.Net.IPAddress.Parse("192.0.2.1"), 1));

    private readonly List<FakeAllocation> _deleted = [];

    [Fact]
    public void Quota_PerUser_RefusesTheAllocationPastTheLimit_AndOthersStillGetTheirs()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 2);

        Assert.Null(table.TryReserveQuota("alice", Client));
        Assert.Null(table.TryReserveQuota("alice", Client));
        Assert.Equal(TurnLimit.AllocationsPerUser, table.TryReserveQuota("alice", Client));
        Assert.Null(table.TryReserveQuota("bob", Client));

        // Usernames are compared exactly: "Alice" is somebody else.
        Assert.Null(table.TryReserveQuota("Alice", Client));
    }

    [Theory]
    [InlineData("alice", "alice")]
    [InlineData("1700000000:d1", "d1")]
    [InlineData("1700000999:d1", "d1")]
    [InlineData("1700000000:a:b", "a:b")]
    [InlineData("1700000000", "1700000000")]
    public void Quota_PerUser_KeysOnTheUserAfterTheRestExpiry(string username, string user) =>
        Assert.Equal(user, TurnAllocationTable<FakeAllocation, FakePort>.QuotaUser(username));

    [Fact]
    public void Quota_PerIp_CountsTheAddressNotThePort_AndIPv6ByItsSlash64()
    {
        var table = new TurnAllocationTable<FakeAllocation, FakePort>(maxAllocations: 100, maxAllocationsPerUser: 100, maxAllocationsPerIp: 2, _deleted.Add);
        static StunAddress At(string address, ushort port) => StunAddress.FromEndPoint(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(address), port));

        Assert.Null(table.TryReserveQuota("a", At("192.0.2.7", 1000)));
        Assert.Null(table.TryReserveQuota("b", At("192.0.2.7", 1001)));
        Assert.Equal(TurnLimit.AllocationsPerIp, table.TryReserveQuota("c", At("192.0.2.7", 1002)));
        Assert.Null(table.TryReserveQuota("c", At("192.0.2.8", 1002)));

        Assert.Null(table.TryReserveQuota("d", At("2001:db8:1:2::1", 1)));
        Assert.Null(table.TryReserveQuota("e", At("2001:db8:1:2:ffff::9", 1)));
        Assert.Equal(TurnLimit.AllocationsPerIp, table.TryReserveQuota("f", At("2001:db8:1:2:abcd::1", 1)));
        Assert.Null(table.TryReserveQuota("f", At("2001:db8:1:3::1", 1)));

        table.ReleaseQuota("a", At("192.0.2.7", 5555));
        Assert.Null(table.TryReserveQuota("g", At("192.0.2.7", 1003)));
    }

    [Fact]
    public void Quota_OnTheServer_CountsEveryUser_AndAReleasedQuotaCanBeTakenAgain()
    {
        var table = Table(maxAllocations: 3, maxPerUser: 2);
        Assert.Null(table.TryReserveQuota("alice", Client));
        Assert.Null(table.TryReserveQuota("bob", Client));
        Assert.Null(table.TryReserveQuota("carol", Client));

        Assert.Equal(TurnLimit.Allocations, table.TryReserveQuota("dave", Client));

        // An Allocate that failed after taking its quota gives it back.
        table.ReleaseQuota("bob", Client);
        Assert.Null(table.TryReserveQuota("dave", Client));
        Assert.Equal(TurnLimit.Allocations, table.TryReserveQuota("bob", Client));
    }

    [Fact]
    public void Quota_ComesBack_WhenTheAllocationIsDeleted_OnceEvenIfDeletedTwice()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 1);
        var allocation = Allocate(table, "alice", port: 1, expiresAtMs: Start + 600_000);
        Assert.Equal(TurnLimit.AllocationsPerUser, table.TryReserveQuota("alice", Client));

        table.Delete(allocation);
        table.Delete(allocation);

        Assert.Single(_deleted);
        Assert.Same(allocation, _deleted[0]);
        Assert.True(allocation.IsClosed);
        Assert.Null(table.Find(allocation.FiveTuple));
        Assert.Equal(0, table.Count);

        // Exactly one quota came back: one more Allocate fits, a second does not.
        Assert.Null(table.TryReserveQuota("alice", Client));
        Assert.Equal(TurnLimit.AllocationsPerUser, table.TryReserveQuota("alice", Client));
    }

    [Fact]
    public void OneAllocationPer5Tuple()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 10);
        var first = Allocate(table, "alice", port: 1, expiresAtMs: Start + 600_000);
        Assert.Null(table.TryReserveQuota("alice", Client));

        Assert.False(table.TryAdd(new FakeAllocation(first.FiveTuple, "alice", Start + 600_000)));
        Assert.Same(first, table.Find(first.FiveTuple));
        Assert.Equal(1, table.Count);
    }

    [Fact]
    public void ReservationToken_RedeemsTheReservedPortOnce()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 10);
        var port = new FakePort();
        var other = new FakePort();

        var token = table.AddReservation(port, Start);
        var otherToken = table.AddReservation(other, Start);

        Assert.NotEqual(0UL, token);
        Assert.NotEqual(token, otherToken);
        Assert.Equal(2, table.ReservationCount);
        Assert.Null(table.TakeReservation(token ^ 1));
        Assert.Same(port, table.TakeReservation(token));
        Assert.Null(table.TakeReservation(token));
        Assert.False(port.Disposed, "a redeemed port belongs to its new allocation");
        Assert.Equal(1, table.ReservationCount);
        Assert.Same(other, table.TakeReservation(otherToken));
    }

    [Fact]
    public void Reservations_HaveABoundOfTheirOwn()
    {
        var table = Table(maxAllocations: 2, maxPerUser: 2);
        Assert.True(table.HasRoomForReservation);

        var token = table.AddReservation(new FakePort(), Start);
        Assert.True(table.HasRoomForReservation);
        table.AddReservation(new FakePort(), Start);
        Assert.False(table.HasRoomForReservation);

        table.TakeReservation(token);
        Assert.True(table.HasRoomForReservation);
    }

    [Fact]
    public void Sweep_DeletesExpiredAllocations_AndSweepsInsideTheOthers()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 10);
        var now = Start;
        var shortLived = Allocate(table, "alice", port: 1, expiresAtMs: now + 600_000);
        var longLived = Allocate(table, "bob", port: 2, expiresAtMs: now + 3_600_000);

        now += 599_999;
        table.Sweep(now);
        Assert.Empty(_deleted);
        Assert.Equal(new[] { now }, shortLived.SweptAt);
        Assert.Equal(new[] { now }, longLived.SweptAt);

        now += 1;
        table.Sweep(now);
        Assert.Equal(new[] { shortLived }, _deleted);
        Assert.Null(table.Find(shortLived.FiveTuple));
        Assert.Same(longLived, table.Find(longLived.FiveTuple));
        Assert.Equal(2, longLived.SweptAt.Count);
        Assert.Single(shortLived.SweptAt);

        // A Refresh moved the survivor's expiry; the sweep honours the new one.
        longLived.ExpiresAtMs = now + 10_000;
        table.Sweep(now + 9_999);
        Assert.Single(_deleted);
        table.Sweep(now + 10_000);
        Assert.Equal(new[] { shortLived, longLived }, _deleted);
        Assert.Equal(0, table.Count);

        // Both quotas came back.
        Assert.Null(table.TryReserveQuota("alice", Client));
        Assert.Null(table.TryReserveQuota("bob", Client));
    }

    [Fact]
    public void Sweep_DisposesAReservationAfter30Seconds_AndItsTokenNoLongerRedeems()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 10);
        var now = Start;
        var early = new FakePort();
        var late = new FakePort();
        var earlyToken = table.AddReservation(early, now);
        now += 10_000;
        var lateToken = table.AddReservation(late, now);

        table.Sweep(Start + TurnAllocationTable<FakeAllocation, FakePort>.ReservationLifetimeMs - 1);
        Assert.False(early.Disposed);

        table.Sweep(Start + TurnAllocationTable<FakeAllocation, FakePort>.ReservationLifetimeMs);
        Assert.True(early.Disposed);
        Assert.False(late.Disposed);
        Assert.Null(table.TakeReservation(earlyToken));
        Assert.Equal(1, table.ReservationCount);

        Assert.Same(late, table.TakeReservation(lateToken));
    }

    [Fact]
    public void Dispose_DeletesEveryAllocation_AndDisposesEveryReservation()
    {
        var table = Table(maxAllocations: 10, maxPerUser: 10);
        var a = Allocate(table, "alice", port: 1, expiresAtMs: Start + 600_000);
        var b = Allocate(table, "bob", port: 2, expiresAtMs: Start + 600_000);
        var port = new FakePort();
        table.AddReservation(port, Start);

        table.Dispose();

        Assert.Equal(2, _deleted.Count);
        Assert.Contains(a, _deleted);
        Assert.Contains(b, _deleted);
        Assert.True(port.Disposed);
        Assert.Equal(0, table.Count);
        Assert.Equal(0, table.ReservationCount);
    }

    private TurnAllocationTable<FakeAllocation, FakePort> Table(int maxAllocations, int maxPerUser) =>
        new(maxAllocations, maxPerUser, maxAllocationsPerIp: 1000, _deleted.Add);

    /// <summary>What the Allocate handler does: quota first, then the entry.</summary>
    private static FakeAllocation Allocate(TurnAllocationTable<FakeAllocation, FakePort> table, string user, ushort port, long expiresAtMs)
    {
        Assert.Null(table.TryReserveQuota(user, Client));
        var allocation = new FakeAllocation(FiveTuple(port), user, expiresAtMs);
        Assert.True(table.TryAdd(allocation));
        return allocation;
    }

    private static TurnFiveTuple FiveTuple(ushort clientPort) =>
        new(StunAddress.FromEndPoint(new System.Net.IPEndPoint(System.Net.IPAddress.Parse("192.0.2.1"), clientPort)),
            StunAddress.FromEndPoint(new System.Net.IPEndPoint(System.Net.IPAddress.Parse("198.51.100.1"), 3478)),
            StunTransport.Udp);

    internal sealed class FakeAllocation(TurnFiveTuple fiveTuple, string username, long expiresAtMs) : ITurnAllocationEntry
    {
        private int _closed;

        public TurnFiveTuple FiveTuple { get; } = fiveTuple;

        public string Username { get; } = username;

        public long ExpiresAtMs { get; set; } = expiresAtMs;

        public bool IsClosed => _closed != 0;

        public List<long> SweptAt { get; } = [];

        public bool TryClose() => Interlocked.Exchange(ref _closed, 1) == 0;

        public void Sweep(long nowMs) => SweptAt.Add(nowMs);
    }

    internal sealed class FakePort : IDisposable
    {
        public bool Disposed { get; private set; }

        public void Dispose() => Disposed = true;
    }
}
