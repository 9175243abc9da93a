using Relay.Server.Mqtt;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineRetainedTreeTests
{
    private static readonly string[] Topics = ["a", "a/b", "a/b/c", "a/x/c", "b", "$SYS/broker/uptime", "/lead", "a//c"];

    [Theory]
    [InlineData("#", "/lead a a//c a/b a/b/c a/x/c b")]
    [InlineData("a/#", "a a//c a/b a/b/c a/x/c")]
    [InlineData("a/+", "a/b")]
    [InlineData("a/+/c", "a//c a/b/c a/x/c")]
    [InlineData("+", "a b")]
    [InlineData("+/+", "/lead a/b")]
    [InlineData("$SYS/#", "$SYS/broker/uptime")]
    [InlineData("+/broker/uptime", "")]
    [InlineData("a/b", "a/b")]
    [InlineData("nothing/#", "")]
    public void Match_FollowsTopicFilterRules_MQTT_4_7(string filter, string expected)
    {
        var tree = new MqttRetainedTree();
        foreach (var topic in Topics)
        {
            tree.Set(new StoredMessage(topic, new byte[] { 1 }, 0, true, null, null));
        }

        var results = new List<StoredMessage>();
        tree.Match(filter, results);
        Assert.Equal(expected, string.Join(' ', results.Select(static m => m.Topic).Order(StringComparer.Ordinal)));
    }

    [Fact]
    public void SetReplaces_RemoveDeletes_AndCountFollows()
    {
        var tree = new MqttRetainedTree();
        tree.Set(new StoredMessage("a/b", new byte[] { 1 }, 0, true, null, null));
        tree.Set(new StoredMessage("a/b", new byte[] { 2 }, 0, true, null, null));
        tree.Set(new StoredMessage("a", new byte[] { 3 }, 0, true, null, null));
        Assert.Equal(2, tree.Count);
        Assert.True(tree.Remove("a/b"));
        Assert.False(tree.Remove("a/b"));
        Assert.False(tree.Contains("a/b"));
        Assert.True(tree.Contains("a"));
        Assert.Equal(1, tree.Count);
        Assert.Equal(3, Assert.Single(tree.All()).Payload.Span[0]);
    }
}
