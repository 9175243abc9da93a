using Relay.Server.Turn;

namespace Relay.Server.Tests.Turn;

public sealed class TurnOptionsValidatorTests
{
    [Fact]
    public void Defaults_AreValid()
    {
        Assert.Empty(Validate(new TurnOptions()));
    }

    [Fact]
    public void AFullGoodConfiguration_IsValid()
    {
        var options = new TurnOptions
        {
            Realm = "example.org",
            AllowLoopbackPeers = true,
            ExternalAddress = "198.51.100.1",
            RelayPortMin = 50000,
            RelayPortMax = 50000,
            DefaultLifetimeSeconds = 600,
            MaxLifetimeSeconds = 600,
            MaxChannelsPerAllocation = 4096,
            MaxBytesPerSecondPerAllocation = 0,
        };
        options.Users.Add("alice:pa:ss");
        options.SharedSecrets.Add("s1");
        options.SharedSecrets.Add("s2");
        options.AllowedPeers.Add("10.0.0.0/8");
        options.DeniedPeers.Add("fd00::/8");
        options.DeniedPeers.Add("192.0.2.1");
        options.RelayAddresses.Add("192.0.2.10");
        options.RelayAddresses.Add("2001:db8::10");
        Assert.Empty(Validate(options));
    }

    [Fact]
    public void BadPeerRanges_NameKeyAndIndex()
    {
        var options = new TurnOptions();
        options.AllowedPeers.Add("10.0.0.0/8");
        options.AllowedPeers.Add("fd00::/8");
        options.AllowedPeers.Add("x");
        options.DeniedPeers.Add("10.0.0.1/8");
        Assert.Equal(
            ["Relay:Turn:AllowedPeers:2: 'x' is not a CIDR range", "Relay:Turn:DeniedPeers:0: '10.0.0.1/8' is not a CIDR range"],
            Validate(options));
    }

    [Theory]
    [InlineData("alice")]
    [InlineData(":pw")]
    [InlineData("alice:")]
    [InlineData("")]
    public void MalformedUser_IsNamed(string entry)
    {
        var options = new TurnOptions();
        options.Users.Add("ok:pw");
        options.Users.Add(entry);
        Assert.Equal(["Relay:Turn:Users:1: expected user:password"], Validate(options));
    }

    [Fact]
    public void DuplicateUser_IsNamed()
    {
        var options = new TurnOptions();
        options.Users.Add("alice:a");
        options.Users.Add("bob:b");
        options.Users.Add("alice:c");
        Assert.Equal(["Relay:Turn:Users:2: user 'alice' is already defined at Users:0"], Validate(options));
    }

    [Fact]
    public void OverlongUser_IsNamed()
    {
        var options = new TurnOptions();
        options.Users.Add(new string('u', 509) + ":pw");
        Assert.Equal(["Relay:Turn:Users:0: the user name is 509 bytes or longer (RFC 8489 §14.3)"], Validate(options));
    }

    [Fact]
    public void Secrets_AreBoundedAndNonEmpty()
    {
        var options = new TurnOptions();
        foreach (var secret in new[] { "a", "", "c", "d", "e" })
        {
            options.SharedSecrets.Add(secret);
        }

        var errors = Validate(options);
        Assert.Equal(2, errors.Count);
        Assert.StartsWith("Relay:Turn:SharedSecrets: 5 secrets; at most 4", errors[0], StringComparison.Ordinal);
        Assert.Equal("Relay:Turn:SharedSecrets:1: must not be empty", errors[1]);
    }

    [Theory]
    [InlineData("", "Relay:Turn:Realm: must not be empty")]
    [InlineData("  ", "Relay:Turn:Realm: must not be empty")]
    [InlineData("a\"b", "Relay:Turn:Realm: must not contain control characters, '\"' or '\\'")]
    [InlineData("a\nb", "Relay:Turn:Realm: must not contain control characters, '\"' or '\\'")]
    public void BadRealm_IsNamed(string realm, string expected)
    {
        Assert.Equal([expected], Validate(new TurnOptions { Realm = realm }));
    }

    [Fact]
    public void LongRealm_IsNamed()
    {
        Assert.Empty(Validate(new TurnOptions { Realm = new string('r', 127) }));
        Assert.Equal(["Relay:Turn:Realm: 128 characters; RFC 8489 §14.9 allows fewer than 128"], Validate(new TurnOptions { Realm = new string('r', 128) }));
    }

    [Theory]
    [InlineData(1023, 65535, "Relay:Turn:RelayPortMin: 1023 is below 1024")]
    [InlineData(49152, 65536, "Relay:Turn:RelayPortMax: 65536 is above 65535")]
    [InlineData(50001, 50000, "Relay:Turn:RelayPortMax: 50000 is below RelayPortMin (50001)")]
    public void PortRange_IsSane(int min, int max, string expected)
    {
        Assert.Equal([expected], Validate(new TurnOptions { RelayPortMin = min, RelayPortMax = max }));
    }

    [Fact]
    public void Lifetimes_AreAtLeastOne_AndMaxCoversDefault()
    {
        Assert.Equal(
            ["Relay:Turn:DefaultLifetimeSeconds: 0 is below 1"],
            Validate(new TurnOptions { DefaultLifetimeSeconds = 0 }));
        Assert.Equal(
            ["Relay:Turn:MaxLifetimeSeconds: 300 is below DefaultLifetimeSeconds (600)"],
            Validate(new TurnOptions { MaxLifetimeSeconds = 300 }));
        Assert.Equal(
            ["Relay:Turn:NonceLifetimeSeconds: 0 is below 1"],
            Validate(new TurnOptions { NonceLifetimeSeconds = 0 }));
    }

    [Fact]
    public void Limits_AreNamed()
    {
        var errors = Validate(new TurnOptions
        {
            MaxAllocationsPerUser = 0,
            MaxAllocations = -1,
            MaxPermissionsPerAllocation = 0,
            MaxChannelsPerAllocation = 4097,
            MaxBytesPerSecondPerAllocation = -5,
        });
        Assert.Equal(
            [
                "Relay:Turn:MaxAllocationsPerUser: 0 is below 1",
                "Relay:Turn:MaxAllocations: -1 is below 1",
                "Relay:Turn:MaxPermissionsPerAllocation: 0 is below 1",
                "Relay:Turn:MaxChannelsPerAllocation: 4097 is above 4096",
                "Relay:Turn:MaxBytesPerSecondPerAllocation: -5 is negative (0 turns the cap off)",
            ],
            errors);
    }

    [Fact]
    public void RelayAddresses_AreUnicast_OnePerFamily()
    {
        var options = new TurnOptions { ExternalAddress = "0.0.0.0" };
        foreach (var address in new[] { "192.0.2.1", "nope", "192.0.2.2", "::", "224.0.0.1", "2001:db8::1", "10", "ff02::1", "2001:db8::2" })
        {
            options.RelayAddresses.Add(address);
        }

        Assert.Equal(
            [
                "Relay:Turn:RelayAddresses:1: 'nope' is not an IP address",
                "Relay:Turn:RelayAddresses:2: a second IPv4 address (the first is RelayAddresses:0); at most one IPv4 and one IPv6",
                "Relay:Turn:RelayAddresses:3: '::' is not a unicast address",
                "Relay:Turn:RelayAddresses:4: '224.0.0.1' is not a unicast address",
                "Relay:Turn:RelayAddresses:6: '10' is not an IP address",
                "Relay:Turn:RelayAddresses:7: 'ff02::1' is not a unicast address",
                "Relay:Turn:RelayAddresses:8: a second IPv6 address (the first is RelayAddresses:5); at most one IPv4 and one IPv6",
                "Relay:Turn:ExternalAddress: '0.0.0.0' is not a unicast address",
            ],
            Validate(options));
    }

    private static List<string> Validate(TurnOptions options)
    {
        var errors = new List<string>();
        TurnOptionsValidator.Validate(options, errors);
        return errors;
    }
}
