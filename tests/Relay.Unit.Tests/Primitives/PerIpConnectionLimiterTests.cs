using System.Net;
using Microsoft.Extensions.Time.Testing;
using Relay.Server.Primitives;

namespace Relay.Server.Tests.Primitives;

/// <summary>The one per-IP connection limit: bounded by open connections, refusals counted, the refusal line throttled.</summary>
public sealed class PerIpConnectionLimiterTests
{
    private static readonly IPAddress Client = IPAddress.Parse("192.0.2.7");

    [Fact]
    public void RefusesPastTheLimit_PerAddress_AndForgetsAnAddressWithNoConnectionLeft()
    {
        var limiter = new PerIpConnectionLimiter(2, new FakeTimeProvider(), static (_, _) => { });
        Assert.True(limiter.TryEnter(Client));
        Assert.True(limiter.TryEnter(Client));
        Assert.False(limiter.TryEnter(Client));
        Assert.True(limiter.TryEnter(IPAddress.Parse("192.0.2.8")));
        Assert.Equal(2, limiter[Client]);
        Assert.Equal(2, limiter.Addresses);

        limiter.Leave(Client);
        Assert.True(limiter.TryEnter(Client));
        limiter.Leave(Client);
        limiter.Leave(Client);
        limiter.Leave(IPAddress.Parse("192.0.2.8"));
        Assert.Equal(0, limiter.Addresses);
        Assert.Equal(1, limiter.Refused);
    }

    [Fact]
    public void AnIPv4MappedAddress_CountsAsItsIPv4Address()
    {
        var limiter = new PerIpConnectionLimiter(1, new FakeTimeProvider(), static (_, _) => { });
        Assert.True(limiter.TryEnter(Client));
        Assert.False(limiter.TryEnter(Client.MapToIPv6()));
        limiter.Leave(Client.MapToIPv6());
        Assert.Equal(0, limiter.Addresses);
    }

    [Fact]
    public void EveryRefusalIsCounted_ButLoggedAtMostEvery10Seconds()
    {
        var time = new FakeTimeProvider();
        var logged = new List<(IPAddress Address, int Limit)>();
        var limiter = new PerIpConnectionLimiter(1, time, (address, limit) => logged.Add((address, limit)));
        Assert.True(limiter.TryEnter(Client));

        for (var i = 0; i < 5; i++)
        {
            Assert.False(limiter.TryEnter(Client.MapToIPv6()));
        }

        Assert.Equal([(Client, 1)], logged);
        time.Advance(TimeSpan.FromSeconds(9.9));
        Assert.False(limiter.TryEnter(Client));
        Assert.Single(logged);
        time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.False(limiter.TryEnter(Client));
        Assert.Equal(2, logged.Count);
        Assert.Equal(7, limiter.Refused);
    }
}
