using System.Net;
using System.Net.Sockets;
using Relay.Server.Hosting;

namespace Relay.Server.Tests;

public sealed class StartupTests
{
    [Fact]
    public async Task UdpPortInUse_StopsStartup_WithAClearMessage()
    {
        var port = FreePorts.UdpAndTcpPair();
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, port));

        var error = await Assert.ThrowsAsync<IOException>(() => RelayTestServer.StartAsync($"Relay:Stun:Port={port}", "Relay:Stun:ListenAddresses:0=127.0.0.1"));
        Assert.Contains($"udp/127.0.0.1:{port}", error.Message, StringComparison.Ordinal);
        Assert.Contains("already in use", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UdpPortHeldBySoReusePortSocket_IsStillDetected()
    {
        // Another process that set SO_REUSEPORT would otherwise silently share our port and traffic.
        var port = FreePorts.UdpAndTcpPair();
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        squatter.SetRawSocketOption(1, 15, new byte[] { 1, 0, 0, 0 });
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, port));

        var error = await Assert.ThrowsAsync<IOException>(() => RelayTestServer.StartAsync($"Relay:Stun:Port={port}", "Relay:Stun:ListenAddresses:0=127.0.0.1"));
        Assert.Contains("already in use", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task FailedStart_StoresNoAdminToken_ThatNobodyWasShown()
    {
        var port = FreePorts.UdpAndTcpPair();
        using var squatter = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        squatter.Bind(new IPEndPoint(IPAddress.Loopback, port));
        var data = Directory.CreateTempSubdirectory("relay-start-").FullName;
        try
        {
            await using var app = RelayHost.Build([$"--Relay:DataDirectory={data}", $"--Relay:Stun:Port={port}", "--Relay:Stun:ListenAddresses:0=127.0.0.1", $"--Relay:Http:Port={FreePorts.Tcp()}", "--Relay:Http:ListenAddresses:0=127.0.0.1"]);
            await Assert.ThrowsAsync<IOException>(() => app.StartAsync());
            Assert.False(File.Exists(Path.Combine(data, Api.AdminTokens.FileName)), "a token that was never printed would lock the operator out");
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task TcpPortInUse_StopsStartup()
    {
        var port = FreePorts.UdpAndTcpPair();
        using var squatter = new TcpListener(IPAddress.Loopback, port);
        squatter.Start();

        var error = await Assert.ThrowsAnyAsync<IOException>(() => RelayTestServer.StartAsync($"Relay:Stun:Port={port}", "Relay:Stun:ListenAddresses:0=127.0.0.1"));
        Assert.Contains(port.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Relay:Stun:Port=70000", "Relay:Stun:Port: must be a port between 1 and 65535 (was 70000)")]
    [InlineData("Relay:Stun:Port=abc", "'Relay:Stun:Port'")]
    [InlineData("Relay:Stun:ListenAddresses:0=not-an-ip", "Relay:Stun:ListenAddresses:0: 'not-an-ip' is not an IP address")]
    [InlineData("Relay:Stun:AlternateAddress=127.0.0.2", "Relay:Stun:AlternateAddress: needs Relay:Stun:ListenAddresses to name a specific primary IPv4 address")]
    [InlineData("Relay:Stun:RateLimit:RequestsPerSecond=0", "Relay:Stun:RateLimit:RequestsPerSecond: must be at least 1")]
    [InlineData("Relay:Stun:Prot=1", "Relay:Stun: unknown key(s) 'Prot'")]
    [InlineData("Relay:Tls:CertificatePath=/nonexistent.pem", "Relay:Tls:KeyPath: must be set together with Relay:Tls:CertificatePath")]
    [InlineData("Relay:Stun:MaxMessageSize=100", "Relay:Stun:MaxMessageSize: must be between 576 and 65535")]
    [InlineData("Relay:Turn:Users:0=no-password", "Relay:Turn:Users:0: expected user:password")]
    [InlineData("Relay:Turn:AllowedPeers:0=10.0.0.1/8", "Relay:Turn:AllowedPeers:0: '10.0.0.1/8' is not a CIDR range")]
    [InlineData("Relay:Turn:Realms=x", "Relay:Turn: unknown key(s) 'Realms'")]
    public void BadValue_StopsStartup_WithAMessageNamingTheKey(string setting, string expected)
    {
        var settings = new[] { "--" + setting };
        if (setting.StartsWith("Relay:Stun:AlternateAddress", StringComparison.Ordinal))
        {
            settings = [.. settings, "--Relay:Stun:ListenAddresses:0=0.0.0.0"];
        }

        var error = Assert.Throws<RelayConfigurationException>(() => RelayHost.Build(settings));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Relay:Push:MaxWaiters=-1", "Relay:Push:MaxWaiters: must be 0..1000000")]
    [InlineData("Relay:Push:Bogus=1", "Relay:Push: unknown key(s) 'Bogus'")]
    [InlineData("Relay:Rendezvous:Typo=1", "Relay:Rendezvous: unknown key(s) 'Typo'")]
    [InlineData("Relay:Webhooks:0:Url=ftp://x", "Relay:Webhooks:0:Url: must be an absolute http or https URL (was 'ftp://x')")]
    [InlineData("Relay:Api:MaxRequestBodyBytes=1", "Relay:Api:MaxRequestBodyBytes: must be between 1024 and 67108864 (was 1)")]
    [InlineData("Relay:Http:Port=0", "Relay:Http:Port: must be a port between 1 and 65535 (was 0)")]
    [InlineData("Relay:DataDirectory= ", "Relay:DataDirectory: must not be empty")]
    public void EveryFeaturesSection_IsBoundAndValidated_AtBuild(string setting, string expected)
    {
        var error = Assert.Throws<RelayConfigurationException>(() => RelayHost.Build(["--" + setting]));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EveryProblem_IsListed_OneKeyPerLine()
    {
        var error = Assert.Throws<RelayConfigurationException>(() => RelayHost.Build(["--Relay:Stun:Port=70000", "--Relay:Mqtt:MaxInflight=0", "--Relay:Push:Bogus=1", "--Relay:Turn:Realm="]));
        var lines = error.Message.Split(Environment.NewLine);
        Assert.Equal("Invalid configuration:", lines[0]);
        Assert.All(lines[1..], static line => Assert.Matches("^  Relay:[A-Za-z:0-9]+: ", line));
        foreach (var key in new[] { "Relay:Stun:Port: ", "Relay:Mqtt:MaxInflight: ", "Relay:Push: unknown key(s) 'Bogus'", "Relay:Turn:Realm: " })
        {
            Assert.Single(lines, line => line.StartsWith("  " + key, StringComparison.Ordinal));
        }
    }

    [Fact]
    public void ConfigurationComesFromEnvironmentVariables_TooUsingDoubleUnderscores()
    {
        Environment.SetEnvironmentVariable("Relay__Stun__Tcp__IdleTimeoutSeconds", "0");
        try
        {
            var error = Assert.Throws<RelayConfigurationException>(() => RelayHost.Build([]));
            Assert.Contains("Relay:Stun:Tcp:IdleTimeoutSeconds: must be at least 1", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            Environment.SetEnvironmentVariable("Relay__Stun__Tcp__IdleTimeoutSeconds", null);
        }
    }
}
