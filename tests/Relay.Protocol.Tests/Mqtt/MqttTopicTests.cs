using System.Text;
using Relay.Protocol.Mqtt;

namespace Relay.Protocol.Tests.Mqtt;

/// <summary>Topic names, filters, matching and shared subscriptions (§4.7, §4.8.2), UTF-16 and UTF-8 alike.</summary>
public sealed class MqttTopicTests
{
    [Theory]
    [InlineData("a", true)]
    [InlineData("/", true)]
    [InlineData("a//b", true)]
    [InlineData("$SYS/x", true)]
    [InlineData("ü/€/😀", true)]
    [InlineData("", false)] // [MQTT-4.7.3-1]
    [InlineData("a/+", false)] // [MQTT-3.3.2-2]
    [InlineData("#", false)]
    [InlineData("a\0b", false)] // [MQTT-1.5.4-2]
    public void Topic_names(string topic, bool valid)
    {
        Assert.Equal(valid, MqttTopic.IsValidTopicName(topic));
        Assert.Equal(valid, MqttTopic.IsValidTopicName(Encoding.UTF8.GetBytes(topic)));
    }

    [Fact]
    public void Topic_name_length_is_counted_in_UTF8_bytes_and_lone_surrogates_are_refused()
    {
        Assert.True(MqttTopic.IsValidTopicName(new string('a', 65_535)));
        Assert.False(MqttTopic.IsValidTopicName(new string('a', 65_536)));
        Assert.False(MqttTopic.IsValidTopicName(new string('é', 32_768))); // 65,536 bytes
        Assert.False(MqttTopic.IsValidTopicName("a\uD800b")); // [MQTT-1.5.4-1]
    }

    [Theory]
    [InlineData("#", true)]
    [InlineData("+", true)]
    [InlineData("a/#", true)]
    [InlineData("+/+", true)]
    [InlineData("/+", true)]
    [InlineData("a/+/b", true)]
    [InlineData("$share/g/a/#", true)]
    [InlineData("", false)] // [MQTT-4.7.3-1]
    [InlineData("a/#/b", false)] // [MQTT-4.7.1-1]
    [InlineData("a#", false)] // [MQTT-4.7.1-1]
    [InlineData("#/", false)]
    [InlineData("a+", false)] // [MQTT-4.7.1-2]
    [InlineData("+a", false)]
    [InlineData("a/b+/c", false)]
    [InlineData("$share//a", false)] // [MQTT-4.8.2-1]
    [InlineData("$share/g", false)]
    [InlineData("$share/g/", false)]
    [InlineData("$share/g+/a", false)] // [MQTT-4.8.2-2]
    [InlineData("$share/g/a+", false)]
    public void Topic_filters(string filter, bool valid)
    {
        Assert.Equal(valid, MqttTopic.IsValidTopicFilter(filter));
        Assert.Equal(valid, MqttTopic.IsValidTopicFilter(Encoding.UTF8.GetBytes(filter)));
    }

    // §4.7.1.2 and §4.7.1.3 examples, and [MQTT-4.7.2-1] for '$' topics.
    [Theory]
    [InlineData("sport/tennis/player1/#", "sport/tennis/player1", true)]
    [InlineData("sport/tennis/player1/#", "sport/tennis/player1/ranking", true)]
    [InlineData("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true)]
    [InlineData("sport/#", "sport", true)]
    [InlineData("#", "sport/tennis", true)]
    [InlineData("sport/tennis/+", "sport/tennis/player1", true)]
    [InlineData("sport/tennis/+", "sport/tennis/player1/ranking", false)]
    [InlineData("sport/+", "sport", false)]
    [InlineData("sport/+", "sport/", true)]
    [InlineData("+/+", "/finance", true)]
    [InlineData("/+", "/finance", true)]
    [InlineData("+", "/finance", false)]
    [InlineData("+/tennis/#", "sport/tennis/x", true)]
    [InlineData("a/b", "a/b", true)]
    [InlineData("a/b", "a/bc", false)]
    [InlineData("a/b", "a", false)]
    [InlineData("#", "$SYS/uptime", false)] // [MQTT-4.7.2-1]
    [InlineData("+/monitor/Clients", "$SYS/monitor/Clients", false)] // [MQTT-4.7.2-1]
    [InlineData("$SYS/#", "$SYS/monitor/Clients", true)]
    [InlineData("$SYS/monitor/+", "$SYS/monitor/Clients", true)]
    public void Matching(string filter, string topic, bool matches)
    {
        Assert.Equal(matches, MqttTopic.Matches(filter, topic));
        Assert.Equal(matches, MqttTopic.Matches(Encoding.UTF8.GetBytes(filter), Encoding.UTF8.GetBytes(topic)));
    }

    [Fact]
    public void Shared_subscriptions_split_into_group_and_filter()
    {
        Assert.True(MqttTopic.TryParseShared("$share/workers/jobs/+", out var group, out var inner));
        Assert.Equal("workers", group.ToString());
        Assert.Equal("jobs/+", inner.ToString());

        Assert.True(MqttTopic.TryParseShared("$share/g/#"u8, out var g8, out var i8));
        Assert.Equal("g"u8.ToArray(), g8.ToArray());
        Assert.Equal("#"u8.ToArray(), i8.ToArray());

        Assert.False(MqttTopic.TryParseShared("jobs/+", out _, out _));
        Assert.False(MqttTopic.TryParseShared("$share/", out _, out _));
        Assert.False(MqttTopic.TryParseShared("$share/#/a", out _, out _)); // [MQTT-4.8.2-2]
        Assert.False(MqttTopic.TryParseShared("$shared/g/a", out _, out _));
    }
}
