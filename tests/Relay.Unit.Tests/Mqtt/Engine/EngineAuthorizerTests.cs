using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Tests.Mqtt.Engine;

public sealed class EngineAuthorizerTests
{
    [Theory]
    [InlineData("a/#", "a/b/c", true)]
    [InlineData("a/#", "a", true)]
    [InlineData("a/#", "a/+/c", true)]
    [InlineData("a/#", "a/#", true)]
    [InlineData("a/+", "a/b", true)]
    [InlineData("a/+", "a/+", true)]
    [InlineData("a/+", "a/#", false)]
    [InlineData("a/b", "a/+", false)]
    [InlineData("a/+/c", "a/x/c", true)]
    [InlineData("a/+/c", "a/x/d", false)]
    [InlineData("#", "+/x", true)]
    [InlineData("devices/d1/#", "devices/d2/#", false)]
    public void GrantCoversRequestedFilterOnlyWhenEveryMatchingTopicIsGranted(string grant, string requested, bool covered) =>
        Assert.Equal(covered, MqttTopicMatcher.Covers(grant, requested));
}
