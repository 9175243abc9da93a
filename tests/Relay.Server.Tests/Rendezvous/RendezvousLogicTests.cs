using System.Text;
using Microsoft.Extensions.Time.Testing;
using Relay.Rendezvous.Introductions;

namespace Relay.Server.Tests.RendezvousServer;

/// <summary>The pure parts of rendezvous: policy, rate limiter, introduction table, NAT pairs, message checks, options.</summary>
public sealed class RendezvousLogicTests
{
    private static RendezvousPolicy Policy(string mode, params (string From, string To, bool Deny)[] rules)
    {
        var options = new RendezvousOptions { Policy = mode };
        foreach (var (from, to, deny) in rules)
        {
            options.Rules.Add(new RendezvousRuleOptions { From = from, To = to, Deny = deny });
        }

        var errors = new List<string>();
        options.Validate(errors);
        Assert.Empty(errors);
        return RendezvousPolicy.Create(options);
    }

    [Fact]
    public void SameTag_NeedsASharedTag()
    {
        var policy = Policy("SameTag");
        Assert.True(policy.Allows("a", ["owner:alice", "x"], "b", ["y", "owner:alice"]));
        Assert.False(policy.Allows("a", ["owner:alice"], "b", ["owner:bob"]));
        Assert.False(policy.Allows("a", [], "b", []));
    }

    [Fact]
    public void Rules_AreDirectional_AndMatchStarDeviceAndTag()
    {
        var policy = Policy("Rules", ("tag:techs", "tag:field", false), ("device:laptop", "*", false));
        Assert.True(policy.Allows("t1", ["techs"], "f1", ["field"]));
        Assert.False(policy.Allows("f1", ["field"], "t1", ["techs"]));
        Assert.True(policy.Allows("laptop", [], "anything", []));
        Assert.False(policy.Allows("laptop2", [], "anything", []));
        Assert.False(policy.Allows("a", ["same"], "b", ["same"]));
    }

    [Fact]
    public void Deny_Wins_WhereverItStands()
    {
        var policy = Policy("Any", ("*", "*", false), ("device:d1", "tag:vault", true));
        Assert.False(policy.Allows("d1", [], "v", ["vault"]));
        Assert.True(policy.Allows("d2", [], "v", ["vault"]));
        Assert.True(policy.Allows("d1", [], "w", []));
    }

    [Theory]
    [InlineData("Sometimes", "Relay:Rendezvous:Policy")]
    [InlineData("1", "Relay:Rendezvous:Policy")]
    [InlineData("SameTag,Any", "Relay:Rendezvous:Policy")]
    public void Options_RejectABadPolicy(string policy, string key)
    {
        var errors = new List<string>();
        new RendezvousOptions { Policy = policy }.Validate(errors);
        Assert.Contains(errors, e => e.StartsWith(key, StringComparison.Ordinal));
    }

    [Fact]
    public void Options_NameEveryBadKey()
    {
        var options = new RendezvousOptions { MaxIntroductionsPerMinute = 0, MaxPendingSessions = 0, OfferTimeoutSeconds = 0, TurnCredentialTtlSeconds = 1 };
        options.Rules.Add(new RendezvousRuleOptions { From = "owner:alice", To = "tag:" });
        var errors = new List<string>();
        options.Validate(errors);
        Assert.Equal(
            ["MaxIntroductionsPerMinute", "MaxPendingSessions", "OfferTimeoutSeconds", "TurnCredentialTtlSeconds", "Rules:0:From", "Rules:0:To"],
            errors.Select(static e => e["Relay:Rendezvous:".Length..e.IndexOf(": ", StringComparison.Ordinal)]));
    }

    [Fact]
    public async Task InvalidRendezvousConfiguration_StopsTheServer_NamingTheKey()
    {
        var e = await Assert.ThrowsAsync<Relay.Server.Hosting.RelayConfigurationException>(() => RelayTestServer.StartAsync("Relay:Rendezvous:Policy=Everyone", "Relay:Rendezvous:Typo=1"));
        Assert.Contains("Relay:Rendezvous", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RateLimiter_IsATokenBucket_OnTheGivenClock()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var limiter = new IntroductionRateLimiter(3, clock);
        Assert.True(limiter.TryAcquire("a"));
        Assert.True(limiter.TryAcquire("a"));
        Assert.True(limiter.TryAcquire("a"));
        Assert.False(limiter.TryAcquire("a"));
        Assert.True(limiter.TryAcquire("b"));

        clock.Advance(TimeSpan.FromSeconds(20));
        Assert.True(limiter.TryAcquire("a"));
        Assert.False(limiter.TryAcquire("a"));

        // Refilled buckets are forgotten; never more than the burst.
        clock.Advance(TimeSpan.FromHours(1));
        limiter.Prune();
        Assert.Equal(0, limiter.Tracked);
        Assert.True(limiter.TryAcquire("a") && limiter.TryAcquire("a") && limiter.TryAcquire("a"));
        Assert.False(limiter.TryAcquire("a"));
    }

    [Fact]
    public void RateLimiter_FailsClosed_PastItsBound()
    {
        var limiter = new IntroductionRateLimiter(3, new FakeTimeProvider(DateTimeOffset.UnixEpoch), maxTracked: 1);
        Assert.True(limiter.TryAcquire("a"));
        Assert.False(limiter.TryAcquire("b"));
    }

    [Fact]
    public void Table_OnlyTheOfferedPeerTakes_ExpiresOnTime_AndIsCapped()
    {
        var t0 = DateTimeOffset.UnixEpoch;
        var table = new IntroductionTable(2);
        Assert.Equal(AddIntroductionResult.Added, table.TryAdd(new PendingIntroduction("s1", "a", "b", "k", "Unknown", t0.AddSeconds(15))));
        Assert.Equal(AddIntroductionResult.DuplicateSession, table.TryAdd(new PendingIntroduction("s1", "c", "b", "k", "Unknown", t0.AddSeconds(15))));
        Assert.Equal(AddIntroductionResult.Added, table.TryAdd(new PendingIntroduction("s2", "a", "c", "k", "Unknown", t0.AddSeconds(20))));
        Assert.Equal(AddIntroductionResult.Full, table.TryAdd(new PendingIntroduction("s3", "a", "d", "k", "Unknown", t0.AddSeconds(20))));

        Assert.False(table.TryTake("s1", "c", out _));
        Assert.Empty(table.Expire(t0.AddSeconds(14)));
        Assert.Equal(["s1"], table.Expire(t0.AddSeconds(15)).Select(static p => p.SessionId));
        Assert.True(table.TryTake("s2", "c", out var taken));
        Assert.Equal("a", taken.Requester);
        Assert.Equal(0, table.PendingCount);

        table.Started("s2", new StartedIntroduction("a", "c", 0, t0.AddMinutes(10)));
        Assert.Equal(ResultLookup.Unknown, table.TryReport("s2", "x", out _));
        Assert.Equal(ResultLookup.Found, table.TryReport("s2", "c", out _));
        Assert.Equal(ResultLookup.Duplicate, table.TryReport("s2", "a", out _));
        Assert.Equal(AddIntroductionResult.DuplicateSession, table.TryAdd(new PendingIntroduction("s2", "a", "c", "k", "Unknown", t0.AddSeconds(20))));
        table.Expire(t0.AddMinutes(10));
        Assert.Equal(ResultLookup.Unknown, table.TryReport("s2", "a", out _));
    }

    [Fact]
    public void NatPairs_AreUnordered_Sorted_AndCoverEveryPairOnce()
    {
        Assert.Equal(NatKinds.PairIndex("Symmetric", "PortRestricted"), NatKinds.PairIndex("PortRestricted", "Symmetric"));
        Assert.Equal("PortRestricted/Symmetric", NatKinds.PairLabel(NatKinds.PairIndex("Symmetric", "PortRestricted")));
        Assert.Equal("Unknown/Unknown", NatKinds.PairLabel(NatKinds.PairIndex("Easy", null)));
        var all = NatKinds.Names.SelectMany(a => NatKinds.Names.Select(b => NatKinds.PairIndex(a, b))).Distinct().Order().ToArray();
        Assert.Equal(Enumerable.Range(0, NatKinds.PairCount), all);
    }

    [Theory]
    [InlineData("{\"type\":\"nat\",\"nat\":\"FullCone\"}", true)]
    [InlineData("{\"type\":\"turn-credentials-request\",\"requestId\":\"1\"}", true)]
    [InlineData("{\"type\":\"result\",\"sessionId\":\"0123456789abcdef0123456789abcdef\",\"path\":\"direct\",\"millisecondsToDirect\":12}", true)]
    [InlineData("{\"type\":\"result\",\"sessionId\":\"0123456789abcdef0123456789abcdef\",\"path\":\"sideways\"}", false)]
    [InlineData("{\"type\":\"answer\",\"sessionId\":\"0123456789ABCDEF0123456789ABCDEF\"}", false)]
    [InlineData("{\"type\":\"answer\",\"sessionId\":\"0123456789abcdef0123456789abcdef\",\"candidates\":[{\"type\":\"host\",\"address\":\"::1\",\"port\":0,\"priority\":1}]}", false)]
    [InlineData("{\"type\":\"start\",\"sessionId\":\"0123456789abcdef0123456789abcdef\"}", false)]
    [InlineData("{\"type\":5}", false)]
    [InlineData("{\"type\":\"nat\",\"nat\":\"FullCone\"", false)]
    [InlineData("", false)]
    public void Reader_ChecksEachTypesFields(string json, bool valid)
    {
        Assert.Equal(valid, RendezvousMessageReader.TryRead(Encoding.UTF8.GetBytes(json), out _, out var problem));
        Assert.Equal(valid, problem.Length == 0);
    }

    [Fact]
    public void Reader_RefusesOversize_BeforeParsing()
    {
        var padded = "{\"type\":\"nat\",\"nat\":\"Open\"," + new string(' ', RendezvousMessageReader.MaxMessageBytes) + "}";
        Assert.False(RendezvousMessageReader.TryRead(Encoding.UTF8.GetBytes(padded), out var message, out var problem));
        Assert.Null(message);
        Assert.Contains("8192", problem, StringComparison.Ordinal);
    }

    /// <summary>
    /// Random and mutated bytes (flipped, dropped, duplicated) of a valid <c>connect</c>, and every prefix of
    /// it: the reader answers each with a verdict and a reason, and never throws: a device's garbage must end
    /// in a bad-request, not an exception on the server's signalling loop.
    /// </summary>
    [Fact]
    public void Reader_AnswersRandomMutatedAndTruncatedInput_WithoutThrowing()
    {
        var valid = Encoding.UTF8.GetBytes(
            "{\"type\":\"connect\",\"sessionId\":\"0123456789abcdef0123456789abcdef\",\"peer\":\"d2\",\"nat\":\"Symmetric\"," +
            "\"candidates\":[{\"type\":\"srflx\",\"address\":\"198.18.0.11\",\"port\":40000,\"priority\":1694498815}]}");
        Assert.True(RendezvousMessageReader.TryRead(valid, out _, out _));

        var random = new Random(7983);
        var inputs = new List<byte[]>();
        for (var length = 0; length < valid.Length; length++)
        {
            inputs.Add(valid[..length]);
        }

        for (var i = 0; i < 3000; i++)
        {
            var mutated = new List<byte>(valid);
            for (var edits = random.Next(1, 6); edits > 0 && mutated.Count > 0; edits--)
            {
                var at = random.Next(mutated.Count);
                switch (random.Next(3))
                {
                    case 0: mutated[at] = (byte)random.Next(256); break;
                    case 1: mutated.RemoveAt(at); break;
                    default: mutated.Insert(at, mutated[at]); break;
                }
            }

            inputs.Add([.. mutated]);
            var noise = new byte[random.Next(0, 300)];
            random.NextBytes(noise);
            inputs.Add(noise);
        }

        var accepted = 0;
        foreach (var input in inputs)
        {
            var ok = RendezvousMessageReader.TryRead(input, out _, out var problem);
            Assert.True(ok == (problem.Length == 0), $"verdict and reason disagree for {Convert.ToHexString(input)}: '{problem}'");
            accepted += ok ? 1 : 0;
        }

        // Every strict prefix is incomplete JSON; most mutations break it, a few (a changed hex digit) do not.
        Assert.InRange(accepted, 1, inputs.Count / 2);
    }
}
