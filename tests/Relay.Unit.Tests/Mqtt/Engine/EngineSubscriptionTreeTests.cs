using Relay.Server.Mqtt;
using Relay.Server.Tests.Mqtt.Broker;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineSubscriptionTreeTests
{
    private static readonly string[] Filters = ["#", "+", "a/#", "a/+", "a/+/c", "+/+", "a/b", "$SYS/#", "+/broker/#", "/+"];

    [Theory]
    [InlineData("a", "# + a/#")]
    [InlineData("a/b", "# +/+ a/# a/+ a/b")]
    [InlineData("a//c", "# a/# a/+/c")]
    [InlineData("/x", "# +/+ /+")]
    [InlineData("$SYS/broker/uptime", "$SYS/#")]
    [InlineData("x/broker", "# +/+ +/broker/#")]
    public void Match_FollowsTopicFilterRules_MQTT_4_7_AndDollarRule_MQTT_4_7_2_1(string topic, string expected)
    {
        var tree = new MqttSubscriptionTree();
        foreach (var filter in Filters)
        {
            tree.Add(new MqttSubscription(BrokerKit.Session(filter), filter, filter, null));
        }

        var results = new List<MqttSubscription>();
        tree.Match(topic, results);
        Assert.Equal(expected, string.Join(' ', results.Select(static s => s.Filter).Order(StringComparer.Ordinal)));
    }

    [Fact]
    public void Remove_ForgetsTheSubscription_AndSharedGroupsYieldOneMemberInTurn()
    {
        var tree = new MqttSubscriptionTree();
        var plain = new MqttSubscription(BrokerKit.Session("p"), "a/b", "a/b", null);
        var one = new MqttSubscription(BrokerKit.Session("1"), "$share/g/a/+", "a/+", "g");
        var two = new MqttSubscription(BrokerKit.Session("2"), "$share/g/a/+", "a/+", "g");
        tree.Add(plain);
        tree.Add(one);
        tree.Add(two);
        var picked = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            var results = new List<MqttSubscription>();
            tree.Match("a/b", results);
            Assert.Equal(2, results.Count);
            picked.Add(Assert.Single(results, static s => s.ShareGroup is not null).Session.ClientId);
        }

        Assert.Equal(["1", "2", "1", "2"], picked);
        tree.Remove(plain);
        tree.Remove(one);
        var after = new List<MqttSubscription>();
        tree.Match("a/b", after);
        Assert.Same(two, Assert.Single(after));
    }
}
