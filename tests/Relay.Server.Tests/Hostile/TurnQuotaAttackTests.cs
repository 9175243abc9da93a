using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Relay.Server.Tests.Turn;
using Relay.Server.Turn;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Review M5 (quota part): a device holding many minted REST credentials (<c>expiry:user</c>, a new
/// username every second) must still count against one per-user quota, and one client address cannot
/// take every relay port whatever usernames it presents. Real UDP, our TURN client, a live server.
/// </summary>
public sealed class TurnQuotaAttackTests
{
    private const string Secret = "hostile-quota-secret";

    [Fact]
    public async Task MintedCredentials_OfOneUser_ShareThePerUserQuota_M5()
    {
        const int quota = 3;
        await using var server = await RelayTestServer.StartAsync(
            $"Relay:Turn:SharedSecrets:0={Secret}", $"Relay:Turn:MaxAllocationsPerUser={quota}", "Relay:Stun:RateLimit:Enabled=false");

        var clients = new List<TurnTestClient>();
        try
        {
            // quota + 1 distinct usernames, all for device d1: each one verifies, only `quota` allocate.
            for (var i = 0; i <= quota; i++)
            {
                var (username, password) = Mint("d1", i);
                var client = TurnTestClient.Udp(server, username, password);
                clients.Add(client);
                var response = await client.SendAuthenticatedAsync(Relay.Protocol.Stun.StunMethod.Allocate, TurnTestClient.UdpTransport);
                if (i < quota)
                {
                    TurnTestClient.AssertSuccess(response);
                }
                else
                {
                    TurnTestClient.AssertError(response, 486);
                }
            }

            // Another user of the same secret is not affected by d1's quota.
            var (other, otherPassword) = Mint("d2", 0);
            var d2 = TurnTestClient.Udp(server, other, otherPassword);
            clients.Add(d2);
            await d2.AllocateAsync();

            var metrics = server.Services.GetRequiredService<TurnMetrics>();
            Assert.Equal(1, metrics.LimitHits(TurnLimit.AllocationsPerUser));
            Assert.Equal(quota + 1, server.Services.GetRequiredService<TurnRelay>().AllocationCount);
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task OneClientAddress_IsCappedWhateverItsUsernames_ASecondAddressIsNot_M5()
    {
        const int perIp = 3;
        await using var server = await RelayTestServer.StartAsync(
            $"Relay:Turn:SharedSecrets:0={Secret}", $"Relay:Turn:MaxAllocationsPerIp={perIp}", "Relay:Stun:RateLimit:Enabled=false");

        var clients = new List<TurnTestClient>();
        try
        {
            // perIp + 1 different users from 127.0.0.1: the per-user quota never bites, the per-IP cap does.
            for (var i = 0; i <= perIp; i++)
            {
                var (username, password) = Mint("user" + i, i);
                var client = TurnTestClient.Udp(server, username, password);
                clients.Add(client);
                var response = await client.SendAuthenticatedAsync(Relay.Protocol.Stun.StunMethod.Allocate, TurnTestClient.UdpTransport);
                if (i < perIp)
                {
                    TurnTestClient.AssertSuccess(response);
                }
                else
                {
                    TurnTestClient.AssertError(response, 486);
                }
            }

            // Loopback is a /8: 127.0.0.2 is another client address, with its own share.
            for (var i = 0; i < perIp; i++)
            {
                var (username, password) = Mint("second" + i, i);
                var client = TurnTestClient.Udp(server, username, password, IPAddress.Parse("127.0.0.2"));
                clients.Add(client);
                await client.AllocateAsync();
            }

            var metrics = server.Services.GetRequiredService<TurnMetrics>();
            Assert.Equal(1, metrics.LimitHits(TurnLimit.AllocationsPerIp));
            Assert.Equal(0, metrics.LimitHits(TurnLimit.AllocationsPerUser));
            Assert.Equal(2 * perIp, server.Services.GetRequiredService<TurnRelay>().AllocationCount);

            // Deleting one allocation (Refresh with LIFETIME 0, RFC 8656 §7.3) gives its address's share back.
            var first = clients[0];
            var refresh = await first.SendAuthenticatedAsync(Relay.Protocol.Stun.StunMethod.Refresh, static (ref Relay.Protocol.Stun.StunMessageWriter w) => w.WriteUInt32(Relay.Protocol.Stun.StunAttributeType.Lifetime, 0));
            TurnTestClient.AssertSuccess(refresh);
            var (again, againPassword) = Mint("again", 0);
            var retry = TurnTestClient.Udp(server, again, againPassword);
            clients.Add(retry);
            await retry.AllocateAsync();
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }
    }

    /// <summary>A REST credential as a back end mints it (draft-uberti-behave-turn-rest-00 §2.2), a distinct expiry each time.</summary>
    private static (string Username, string Password) Mint(string user, int nth)
    {
        var expiry = DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 3600 + nth;
        var username = $"{expiry}:{user}";
        return (username, Convert.ToBase64String(HMACSHA1.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(username))));
    }
}
