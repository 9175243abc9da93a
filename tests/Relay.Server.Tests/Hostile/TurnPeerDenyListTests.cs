using System.Net;
using Relay.Protocol.Stun;
using Relay.Server.Tests.Turn;

namespace Relay.Server.Tests.Hostile;

/// <summary>
/// Review L7: the relay must not reach the IETF protocol-assignment block, Azure's wire server or the
/// cloud metadata address through CreatePermission, over a real allocation. 198.18.0.0/15 (benchmarking)
/// stays reachable: the NAT lab's "public" side lives there.
/// </summary>
public sealed class TurnPeerDenyListTests
{
    [Fact]
    public async Task CreatePermission_ToInfrastructureAddresses_Gets403_L7()
    {
        await using var server = await RelayTestServer.StartAsync("Relay:Turn:Users:0=alice:pw", "Relay:Stun:RateLimit:Enabled=false");
        await using var client = TurnTestClient.Udp(server, "alice", "pw");
        await client.AllocateAsync();

        string[] denied =
        [
            "192.0.0.1",       // 192.0.0.0/24, IETF protocol assignments (RFC 6890)
            "192.0.0.170",     // ... NAT64 discovery (RFC 7050) is in it
            "192.0.0.255",
            "168.63.129.16",   // Azure wire server / DNS / health probes
            "169.254.169.254", // cloud metadata (AWS, GCP, Azure IMDS), in 169.254/16
        ];
        foreach (var address in denied)
        {
            var response = await client.SendAuthenticatedAsync(StunMethod.CreatePermission, (ref StunMessageWriter w) => TurnTestClient.WritePeer(ref w, new IPEndPoint(IPAddress.Parse(address), 80)));
            Assert.True(response.ErrorCode == 403, $"{address}: expected 403, got {response}");
        }

        // Neighbours of the denied ranges, and the NAT lab's 198.18/15, are ordinary peers.
        foreach (var address in new[] { "192.0.1.1", "168.63.129.17", "198.18.0.12", "198.19.255.1" })
        {
            var response = await client.SendAuthenticatedAsync(StunMethod.CreatePermission, (ref StunMessageWriter w) => TurnTestClient.WritePeer(ref w, new IPEndPoint(IPAddress.Parse(address), 80)));
            Assert.True(response.Class == StunClass.SuccessResponse, $"{address}: expected success, got {response}");
        }
    }
}
