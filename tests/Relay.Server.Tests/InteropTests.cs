using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Relay.Server.Tests;

/// <summary>
/// Real third-party clients against our server: coturn's turnutils (Debian coturn) and the classic
/// RFC 3489 client (Debian stun-client). test.sh installs them; a missing binary fails the test,
/// because a skipped interop test would let CI go green having proved nothing.
/// </summary>
public sealed partial class InteropTests
{
    [Theory]
    [InlineData("127.0.0.1", "IPv4")]
    [InlineData("::1", "IPv6")]
    public async Task CoturnStunClient_ReportsTheReflexiveAddressWeExpect(string address, string family)
    {
        await using var server = await RelayTestServer.StartAsync();
        var result = await ExternalTool.RunAsync("turnutils_stunclient", "-p", server.StunPort.ToString(System.Globalization.CultureInfo.InvariantCulture), address);

        // turnutils_stunclient binds an ephemeral port we cannot choose, so match the address and
        // check that the port it reports is the one our server saw (it is in no other place).
        var match = Regex.Match(result.Output, $@"{family}\. UDP reflexive addr: (?<address>.+):(?<port>\d+)");
        Assert.True(match.Success, "no reflexive address in:\n" + result.Output);
        Assert.Equal(address, match.Groups["address"].Value);
        Assert.InRange(int.Parse(match.Groups["port"].Value, System.Globalization.CultureInfo.InvariantCulture), 1024, 65535);
        Assert.True(server.Metrics.Responses(Relay.Rendezvous.Stun.StunTransport.Udp, 200) >= 1);
    }

    [Fact]
    public async Task CoturnNatDiscovery_ClassifiesLoopbackAsEndpointIndependent_AgainstOurRfc5780Mode()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");
        var port = server.StunPort.ToString(System.Globalization.CultureInfo.InvariantCulture);

        var result = await ExternalTool.RunAsync("turnutils_natdiscovery", "-m", "-f", "-p", port, "127.0.0.1");
        Assert.Contains("NAT with Endpoint Independent Mapping!", result.Output, StringComparison.Ordinal);
        Assert.Contains("NAT with Endpoint Independent Filtering!", result.Output, StringComparison.Ordinal);

        // -P pads each request to 1500 bytes; the server must take and answer them.
        var padded = await ExternalTool.RunAsync("turnutils_natdiscovery", "-m", "-f", "-P", "-p", port, "127.0.0.1");
        Assert.Contains("NAT with Endpoint Independent Mapping!", padded.Output, StringComparison.Ordinal);
        Assert.Contains("NAT with Endpoint Independent Filtering!", padded.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ClassicStunClient_ReportsOpen_AgainstOurRfc5780Mode()
    {
        await using var server = await RelayTestServer.StartAsync(
            "Relay:Stun:ListenAddresses:0=127.0.0.1", "Relay:Stun:AlternateAddress=127.0.0.2");

        // Debian's stun client exits with its NAT-type code: 1 means "Open" (success), 28 means blocked.
        // Left to itself it picks a random source port pair and fails when either is taken, so give it a
        // pair that is free (it uses -p and -p + 1).
        var source = FreePorts.UdpAndTcpPair().ToString(System.Globalization.CultureInfo.InvariantCulture);
        var result = await ExternalTool.RunAsync("stun", $"127.0.0.1:{server.StunPort}", "-p", source);
        Assert.True(result.ExitCode == 1, $"exit code {result.ExitCode}:\n{result.Output}");
        Assert.Contains("Primary: Open", result.Output, StringComparison.Ordinal);
        Assert.True(server.Metrics.Responses(Relay.Rendezvous.Stun.StunTransport.Udp, 200) >= 3, "tests I, II and III each got an answer");
    }
}
