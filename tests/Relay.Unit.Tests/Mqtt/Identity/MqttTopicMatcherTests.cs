using Relay.Server.Mqtt.Identity;

namespace Relay.Server.Tests.Mqtt.Identity;

public sealed class MqttTopicMatcherTests
{
    [Theory]
    // MQTT 5.0 §4.7.1.2 examples: '#' matches the parent and any number of child levels [MQTT-4.7.1-2].
    [InlineData("sport/tennis/player1/#", "sport/tennis/player1", true)]
    [InlineData("sport/tennis/player1/#", "sport/tennis/player1/ranking", true)]
    [InlineData("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true)]
    [InlineData("sport/#", "sport", true)]
    [InlineData("#", "sport/tennis", true)]
    [InlineData("#", "/", true)]
    // §4.7.1.3 examples: '+' matches exactly one level.
    [InlineData("sport/tennis/+", "sport/tennis/player1", true)]
    [InlineData("sport/tennis/+", "sport/tennis/player1/ranking", false)]
    [InlineData("sport/+", "sport", false)]
    [InlineData("sport/+", "sport/", true)]
    [InlineData("+/+", "/finance", true)]
    [InlineData("/+", "/finance", true)]
    [InlineData("+", "/finance", false)]
    [InlineData("+/tennis/#", "sport/tennis", true)]
    // Literal levels are compared exactly, case-sensitively; empty levels are levels.
    [InlineData("a/b", "a/b", true)]
    [InlineData("a/b", "a/B", false)]
    [InlineData("a/b", "a/b/", false)]
    [InlineData("a//b", "a//b", true)]
    [InlineData("a/+/b", "a//b", true)]
    [InlineData("a/b", "a", false)]
    // [MQTT-4.7.2-1]: wildcards at the first level do not match topics starting with '$'.
    [InlineData("#", "$SYS/broker", false)]
    [InlineData("+/monitor/Clients", "$SYS/monitor/Clients", false)]
    [InlineData("$SYS/#", "$SYS/monitor/Clients", true)]
    [InlineData("$SYS/monitor/+", "$SYS/monitor/Clients", true)]
    [InlineData("a/#", "a/$b", true)]
    public void Matches_FollowsMqttRules(string filter, string topic, bool expected) =>
        Assert.Equal(expected, MqttTopicMatcher.Matches(filter, topic));

    [Theory]
    [InlineData("devices/d1/#", "devices/d1/#", true)]
    [InlineData("devices/d1/#", "devices/d1/+/x", true)]
    [InlineData("devices/d1/#", "devices/d1", true)] // '#' also matches the parent level
    [InlineData("devices/d1/#", "devices/d1/a/b/c", true)]
    [InlineData("devices/d1/#", "devices/+/x", false)]
    [InlineData("devices/d1/#", "devices/#", false)]
    [InlineData("devices/d1/#", "#", false)]
    [InlineData("devices/d1/#", "+/d1/x", false)]
    [InlineData("devices/+/x", "devices/d1/x", true)]
    [InlineData("devices/+/x", "devices/+/x", true)]
    [InlineData("devices/+/x", "devices/#", false)]
    [InlineData("devices/+/x", "devices/d1/x/y", false)]
    [InlineData("a/+", "a", false)]
    [InlineData("a/+", "a/#", false)]
    [InlineData("a", "a/#", false)]
    [InlineData("#", "#", true)]
    [InlineData("#", "a/+/#", true)]
    [InlineData("+/#", "#", false)]
    [InlineData("+/#", "a/#", true)]
    [InlineData("a/#", "a/#", true)]
    [InlineData("a/b", "a/b", true)]
    [InlineData("a/b", "a/c", false)]
    // A leading wildcard covers no '$' topic, so it cannot cover a request naming one [MQTT-4.7.2-1].
    [InlineData("#", "$SYS/#", false)]
    [InlineData("+/x", "$SYS/x", false)]
    [InlineData("$SYS/#", "$SYS/broker/+", true)]
    // ...but a request starting with a wildcard matches no '$' topic either, so '#' covers it.
    [InlineData("#", "+/x", true)]
    public void Covers_AsksWhetherEveryTopicOfTheRequestIsGranted(string grant, string requested, bool expected) =>
        Assert.Equal(expected, MqttTopicMatcher.Covers(grant, requested));

    [Theory]
    [InlineData("devices/d1/secret", "devices/#", true)]
    [InlineData("devices/d1/secret", "devices/+/secret", true)]
    [InlineData("devices/d1/secret", "devices/d2/#", false)]
    [InlineData("devices/+/secret", "devices/d1/+", true)]
    [InlineData("a/b", "a/b/#", true)] // parent level
    [InlineData("a/b/#", "a/b", true)]
    [InlineData("a/b", "a/b/c", false)]
    [InlineData("a/+", "a", false)]
    [InlineData("#", "$SYS/x", false)]
    [InlineData("$SYS/x", "+/x", false)]
    [InlineData("$SYS/#", "$SYS/x", true)]
    [InlineData("a/+/c", "a/b/+", true)]
    [InlineData("a/x/c", "a/b/+", false)]
    public void Overlaps_AsksWhetherAnyTopicMatchesBoth(string a, string b, bool expected)
    {
        Assert.Equal(expected, MqttTopicMatcher.Overlaps(a, b));
        Assert.Equal(expected, MqttTopicMatcher.Overlaps(b, a));
    }

    [Theory]
    [InlineData("a/b", true)]
    [InlineData("#", true)]
    [InlineData("a/#", true)]
    [InlineData("+/+/#", true)]
    [InlineData("/", true)]
    [InlineData("", false)]
    [InlineData("a/#/b", false)] // [MQTT-4.7.1-1]: '#' must be last
    [InlineData("a#", false)]
    [InlineData("a/b+", false)] // [MQTT-4.7.1-2/3]: wildcards occupy a whole level
    [InlineData("+a", false)]
    public void IsValidFilter(string filter, bool expected) => Assert.Equal(expected, MqttTopicMatcher.IsValidFilter(filter));

    [Theory]
    [InlineData("devices/%u/#", "devices/d1/x", "d1", "c", true)]
    [InlineData("devices/%u/#", "devices/d2/x", "d1", "c", false)]
    [InlineData("devices/%c/#", "devices/c/x", "d1", "c", true)]
    [InlineData("u/pre-%u-%c/x", "u/pre-d1-c/x", "d1", "c", true)]
    [InlineData("u/pre-%u-%c/x", "u/pre-d1-cc/x", "d1", "c", false)]
    [InlineData("u/%u", "u/", "", "c", false)] // an empty name substitutes nothing
    [InlineData("u/%u/x", "u/a/b/x", "a/b", "c", false)] // a name with '/' cannot span levels
    public void Substitution_IsMatchedLevelByLevel(string grant, string topic, string user, string client, bool expected) =>
        Assert.Equal(expected, MqttTopicMatcher.Matches(grant, topic, new MqttSubstitution(user, client)));

    [Fact]
    public void Substitution_InCoverage_RejectsWildcardValues()
    {
        Assert.True(MqttTopicMatcher.Covers("devices/%u/#", "devices/d1/+", new MqttSubstitution("d1", "d1")));
        Assert.False(MqttTopicMatcher.Covers("devices/%u/#", "devices/+/x", new MqttSubstitution("d1", "d1")));
        Assert.False(MqttTopicMatcher.Covers("devices/%u/#", "devices/+/x", new MqttSubstitution("+", "d1")));
        Assert.False(MqttTopicMatcher.Covers("devices/%u/#", "devices/#/x", new MqttSubstitution("#", "d1")));
        // Without substitution, "%u" is just text.
        Assert.True(MqttTopicMatcher.Matches("a/%u", "a/%u"));
        Assert.False(MqttTopicMatcher.Matches("a/%u", "a/x"));
    }

    [Fact]
    public void Matching_DoesNotAllocate()
    {
        var substitution = "d1";
        _ = MqttTopicMatcher.Covers("devices/%u/#", "devices/d1/+/x", new MqttSubstitution(substitution, substitution));
        var before = GC.GetAllocatedBytesForCurrentThread();
        var hits = 0;
        for (var i = 0; i < 1000; i++)
        {
            hits += MqttTopicMatcher.Matches("devices/+/telemetry/#", "devices/d1/telemetry/temp") ? 1 : 0;
            hits += MqttTopicMatcher.Covers("devices/%u/#", "devices/d1/+/x", new MqttSubstitution(substitution, substitution)) ? 1 : 0;
            hits += MqttTopicMatcher.Overlaps("devices/+/secret", "devices/#") ? 1 : 0;
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(3000, hits);
    }
}
