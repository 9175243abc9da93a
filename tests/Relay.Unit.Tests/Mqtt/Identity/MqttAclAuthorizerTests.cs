using Relay.Server.Hosting;
using Relay.Server.Mqtt;
using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Tests.Mqtt.Identity;

public sealed class MqttAclAuthorizerTests
{
    private static readonly MqttIdentity D1 = new(MqttPrincipalKind.Device, "d1", []);
    private static readonly MqttIdentity Anonymous = new(MqttPrincipalKind.Anonymous, "", []);

    private static MqttAclAuthorizer Authorizer(out MqttIdentityMetrics metrics, params MqttAclRuleOptions[] rules)
    {
        var options = new MqttOptions();
        foreach (var rule in rules)
        {
            options.Acl.Add(rule);
        }

        metrics = new MqttIdentityMetrics();
        return new MqttAclAuthorizer(options, metrics);
    }

    private static MqttAclAuthorizer Authorizer(params MqttAclRuleOptions[] rules) => Authorizer(out _, rules);

    [Fact]
    public void Device_IsConfinedToItsOwnSubtree()
    {
        var acl = Authorizer(out var metrics);
        Assert.True(acl.CanPublish(D1, "d1", "devices/d1/telemetry"));
        Assert.True(acl.CanPublish(D1, "d1", "devices/d1"));
        Assert.True(acl.CanSubscribe(D1, "d1", "devices/d1/#"));
        Assert.True(acl.CanSubscribe(D1, "d1", "devices/d1/+/x"));

        Assert.False(acl.CanPublish(D1, "d1", "devices/d2/telemetry"));
        Assert.False(acl.CanPublish(D1, "d1", "devices/d1x/telemetry"));
        Assert.False(acl.CanPublish(D1, "d1", "other"));
        Assert.False(acl.CanPublish(D1, "d1", "devices/d1/+")); // wildcard in a topic name [MQTT-3.3.2-2]
        Assert.False(acl.CanSubscribe(D1, "d1", "devices/d2/#"));
        Assert.False(acl.CanSubscribe(D1, "d1", "#"));
        Assert.False(acl.CanSubscribe(D1, "d1", "+/d2/x"));
        Assert.False(acl.CanSubscribe(D1, "d1", "devices/+/x"));
        Assert.False(acl.CanSubscribe(D1, "d1", "devices/#"));
        Assert.False(acl.CanSubscribe(D1, "d1", "devices/d1/#/x")); // malformed filter
        Assert.Equal(4, metrics.AclDenials(MqttAction.Publish));
        Assert.Equal(6, metrics.AclDenials(MqttAction.Subscribe));
    }

    [Fact]
    public void Device_ExtraGrants_AddActionsOnTheirFilters()
    {
        var acl = Authorizer();
        var device = new MqttIdentity(MqttPrincipalKind.Device, "d1", [new("broadcast/#", MqttAction.Subscribe), new("fleet/status", MqttAction.Publish)]);
        Assert.True(acl.CanSubscribe(device, "d1", "broadcast/firmware"));
        Assert.False(acl.CanPublish(device, "d1", "broadcast/firmware"));
        Assert.True(acl.CanPublish(device, "d1", "fleet/status"));
        Assert.False(acl.CanSubscribe(device, "d1", "fleet/status"));
    }

    [Fact]
    public void ServiceAccount_GetsItsGrants_AndNoDeviceSubtree()
    {
        var acl = Authorizer();
        Assert.True(MqttAuthenticator.TryParseGrant("pub:devices/+/commands/#", out var pub));
        Assert.True(MqttAuthenticator.TryParseGrant("sub:devices/+/telemetry/#", out var sub));
        Assert.True(MqttAuthenticator.TryParseGrant("status/#", out var both));
        Assert.False(MqttAuthenticator.TryParseGrant("pub:a/#/b", out _));
        var backend = new MqttIdentity(MqttPrincipalKind.Service, "backend", [pub, sub, both]);
        Assert.True(acl.CanPublish(backend, "backend-1", "devices/d7/commands/reboot"));
        Assert.False(acl.CanSubscribe(backend, "backend-1", "devices/+/commands/#"));
        Assert.True(acl.CanSubscribe(backend, "backend-1", "devices/+/telemetry/#"));
        Assert.False(acl.CanPublish(backend, "backend-1", "devices/d7/telemetry/x"));
        Assert.True(acl.CanPublish(backend, "backend-1", "status/x"));
        Assert.True(acl.CanSubscribe(backend, "backend-1", "status/#"));
        Assert.False(acl.CanSubscribe(backend, "backend-1", "#"));
        Assert.False(acl.CanPublish(backend, "backend", "devices/backend/x"));
    }

    [Fact]
    public void AnonymousAndExternal_GetNothingBeyondTheRules()
    {
        var external = new MqttIdentity(MqttPrincipalKind.External, "ldap-user", [new("#", MqttAction.All)]);
        var none = Authorizer();
        Assert.False(none.CanPublish(Anonymous, "x", "devices/x/a"));
        Assert.False(none.CanPublish(external, "ldap-user", "devices/ldap-user/a"));
        Assert.False(none.CanSubscribe(external, "ldap-user", "a")); // its Grants are not honoured

        var lab = Authorizer(new MqttAclRuleOptions { Topic = "lab/#" });
        Assert.True(lab.CanPublish(Anonymous, "x", "lab/a"));
        Assert.True(lab.CanSubscribe(external, "ldap-user", "lab/+"));
        Assert.False(lab.CanSubscribe(external, "ldap-user", "#"));
    }

    [Fact]
    public void Rules_FirstMatchWins_DenyBeforeAllow()
    {
        var acl = Authorizer(
            new MqttAclRuleOptions { Permission = MqttAclPermission.Deny, Topic = "devices/+/secret", Action = MqttAclAction.All },
            new MqttAclRuleOptions { Permission = MqttAclPermission.Allow, Username = "ops", Topic = "devices/#" });
        var ops = new MqttIdentity(MqttPrincipalKind.Service, "ops", []);
        Assert.True(acl.CanPublish(ops, "ops", "devices/d1/cmd"));
        Assert.False(acl.CanPublish(ops, "ops", "devices/d1/secret"));
        // The device's own subtree grant comes after the rules: a deny rule overrides it.
        Assert.False(acl.CanPublish(D1, "d1", "devices/d1/secret"));
        Assert.True(acl.CanPublish(D1, "d1", "devices/d1/other"));
        // A subscription that could receive a denied topic is denied, even though its allow covers it.
        Assert.False(acl.CanSubscribe(ops, "ops", "devices/#"));
        Assert.False(acl.CanSubscribe(D1, "d1", "devices/d1/#"));
        Assert.True(acl.CanSubscribe(ops, "ops", "devices/+/cmd"));
    }

    [Fact]
    public void Rules_AllowBeforeDeny_AlsoFirstMatchWins()
    {
        var acl = Authorizer(
            new MqttAclRuleOptions { Permission = MqttAclPermission.Allow, Username = "ops", Topic = "devices/#" },
            new MqttAclRuleOptions { Permission = MqttAclPermission.Deny, Topic = "devices/#" });
        var ops = new MqttIdentity(MqttPrincipalKind.Service, "ops", []);
        Assert.True(acl.CanPublish(ops, "ops", "devices/d1/secret"));
        Assert.False(acl.CanPublish(D1, "d1", "devices/d1/x")); // the deny matched first for d1
    }

    [Fact]
    public void Rules_MatchActions_AndUsernameAndClientIdPatterns()
    {
        var acl = Authorizer(
            new MqttAclRuleOptions { Username = "sensor-*", Topic = "sensors/#", Action = MqttAclAction.Publish },
            new MqttAclRuleOptions { ClientId = "dash", Topic = "sensors/#", Action = MqttAclAction.Subscribe },
            new MqttAclRuleOptions { Username = "*", ClientId = "*", Topic = "public/#", Action = MqttAclAction.Subscribe });
        var sensor = new MqttIdentity(MqttPrincipalKind.External, "sensor-7", []);
        var other = new MqttIdentity(MqttPrincipalKind.External, "sensor", []);
        Assert.True(acl.CanPublish(sensor, "s7", "sensors/temp"));
        Assert.False(acl.CanSubscribe(sensor, "s7", "sensors/temp"));
        Assert.False(acl.CanPublish(other, "s", "sensors/temp"));
        Assert.True(acl.CanSubscribe(other, "dash", "sensors/#"));
        Assert.False(acl.CanSubscribe(other, "dash2", "sensors/#"));
        Assert.True(acl.CanSubscribe(Anonymous, "anything", "public/+"));
        Assert.False(acl.CanPublish(Anonymous, "anything", "public/x"));
    }

    [Fact]
    public void Rules_SubstituteUsernameAndClientId()
    {
        var acl = Authorizer(
            new MqttAclRuleOptions { Topic = "users/%u/#" },
            new MqttAclRuleOptions { Topic = "clients/%c/inbox", Action = MqttAclAction.Subscribe });
        var alice = new MqttIdentity(MqttPrincipalKind.External, "alice", []);
        Assert.True(acl.CanPublish(alice, "phone", "users/alice/x"));
        Assert.False(acl.CanPublish(alice, "phone", "users/bob/x"));
        Assert.True(acl.CanSubscribe(alice, "phone", "clients/phone/inbox"));
        Assert.False(acl.CanSubscribe(alice, "phone", "clients/+/inbox"));
        Assert.False(acl.CanSubscribe(alice, "phone", "clients/laptop/inbox"));
        // Anonymous has no username: %u matches nothing for it.
        Assert.False(acl.CanPublish(Anonymous, "phone", "users//x"));
    }

    [Fact]
    public void DollarTopics_AreNotReachedByLeadingWildcards()
    {
        var acl = Authorizer(new MqttAclRuleOptions { Topic = "#" });
        Assert.True(acl.CanSubscribe(Anonymous, "c", "#"));
        Assert.False(acl.CanSubscribe(Anonymous, "c", "$SYS/#"));
        Assert.False(acl.CanPublish(Anonymous, "c", "$SYS/x"));
    }

    [Theory]
    [InlineData("maybe", "all", "a", "Acl:0:Permission")]
    [InlineData("allow", "read", "a", "Acl:0:Action")]
    [InlineData("allow", "all", "a/#/b", "Acl:0:Topic")]
    [InlineData("allow", "all", "", "Acl:0:Topic")]
    public void InvalidRules_StopStartup_NamingTheKey(string permission, string action, string topic, string key)
    {
        var options = new MqttOptions();
        options.Acl.Add(new MqttAclRuleOptions { Permission = NamedOrUndefined<MqttAclPermission>(permission), Action = NamedOrUndefined<MqttAclAction>(action), Topic = topic });
        var error = Assert.Throws<RelayConfigurationException>(() => MqttAclAuthorizer.Compile(options));
        Assert.Contains(key, error.Message, StringComparison.Ordinal);
    }

    // Configuration binding refuses names that are not values; a bare number binds to a value no member names.
    private static TEnum NamedOrUndefined<TEnum>(string name)
        where TEnum : struct, Enum =>
        Enum.TryParse<TEnum>(name, ignoreCase: true, out var value) ? value : (TEnum)Enum.ToObject(typeof(TEnum), 99);

    [Fact]
    public void Checks_DoNotAllocate()
    {
        var acl = Authorizer(
            new MqttAclRuleOptions { Permission = MqttAclPermission.Deny, Topic = "devices/+/secret" },
            new MqttAclRuleOptions { Topic = "users/%u/#" });
        var device = new MqttIdentity(MqttPrincipalKind.Device, "d1", [new("broadcast/#", MqttAction.Subscribe)]);
        _ = acl.CanPublish(device, "d1", "devices/d1/telemetry");
        _ = acl.CanSubscribe(device, "d1", "broadcast/+");
        var before = GC.GetAllocatedBytesForCurrentThread();
        var allowed = 0;
        for (var i = 0; i < 1000; i++)
        {
            allowed += acl.CanPublish(device, "d1", "devices/d1/telemetry") ? 1 : 0;
            allowed += acl.CanSubscribe(device, "d1", "broadcast/+") ? 1 : 0;
            allowed += acl.CanPublish(device, "d1", "devices/d2/telemetry") ? 1 : 0;
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(2000, allowed);
    }
}
