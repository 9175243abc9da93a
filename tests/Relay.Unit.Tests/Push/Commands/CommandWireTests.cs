using System.Text;
using System.Text.Json;
using Relay.Server.Push;
using Relay.Server.Push.Commands;

namespace Relay.Server.Tests.Push.Commands;

/// <summary>The device side of the command contract (docs/push.md): topics, the command envelope, result parsing.</summary>
public sealed class CommandWireTests
{
    [Fact]
    public void Topics_are_devices_id_commands_and_devices_id_results()
    {
        Assert.Equal("devices/d1/commands", CommandWire.CommandsTopic("d1"));
        Assert.Equal("devices/d1/results", CommandWire.ResultsTopic("d1"));
    }

    [Theory]
    [InlineData("devices/d1/results", "d1")]
    [InlineData("devices/a-b.c/results", "a-b.c")]
    [InlineData("devices/d1/commands", null)]
    [InlineData("devices//results", null)]
    [InlineData("devices/a/b/results", null)]
    [InlineData("devices/results", null)]
    [InlineData("things/d1/results", null)]
    [InlineData("devices/d1/results/x", null)]
    public void Only_a_results_topic_of_one_device_names_a_device(string topic, string? device)
    {
        Assert.Equal(device is not null, CommandWire.TryGetResultsDevice(topic, out var found));
        Assert.Equal(device ?? string.Empty, found);
    }

    [Fact]
    public void A_json_command_goes_as_the_envelope_with_the_mqtt5_request_response_properties()
    {
        var entry = Entry(binary: false, "{\"times\":3}"u8.ToArray());
        var message = CommandWire.BuildMessage(entry);

        Assert.Equal("devices/d1/commands", message.Topic);
        Assert.Equal(2, message.QoS);
        Assert.False(message.Retain);
        Assert.Equal(entry.ExpiresAt, message.ExpiresAt);
        using var envelope = JsonDocument.Parse(message.Payload);
        var root = envelope.RootElement;
        Assert.Equal("0123abcd", root.GetProperty("id").GetString());
        Assert.Equal("blink", root.GetProperty("name").GetString());
        Assert.Equal(3, root.GetProperty("payload").GetProperty("times").GetInt32());
        Assert.False(root.TryGetProperty("payloadBase64", out _));
        Assert.Equal("2026-01-01T12:00:00.250Z", root.GetProperty("expiresAt").GetString());

        // MQTT 5 §4.10: the response topic and correlation data (= the command id) tell the device where to answer.
        var properties = message.Properties!;
        Assert.Equal((byte)1, properties.PayloadFormatIndicator);
        Assert.Equal("application/json", properties.ContentType);
        Assert.Equal("devices/d1/results", properties.ResponseTopic);
        Assert.Equal("0123abcd", Encoding.UTF8.GetString(properties.CorrelationData!.Value.Span));
    }

    [Fact]
    public void A_binary_command_goes_as_payloadBase64()
    {
        var message = CommandWire.BuildMessage(Entry(binary: true, [0x00, 0x01, 0x02, 0xFF]));
        using var envelope = JsonDocument.Parse(message.Payload);
        Assert.Equal("AAEC/w==", envelope.RootElement.GetProperty("payloadBase64").GetString());
        Assert.False(envelope.RootElement.TryGetProperty("payload", out _));
    }

    [Theory]
    [InlineData("{\"id\":\"c1\",\"status\":\"succeeded\",\"payload\":{\"echo\":\"x\"}}", "c1", true, "{\"echo\":\"x\"}")]
    [InlineData("{\"id\":\"c1\",\"status\":\"failed\"}", "c1", false, null)]
    [InlineData("{\"status\":\"failed\",\"payload\":[1, 2],\"extra\":true,\"id\":\"c2\"}", "c2", false, "[1, 2]")]
    [InlineData("{\"id\":\"c3\",\"status\":\"succeeded\",\"payload\":null}", "c3", true, "null")]
    public void A_result_names_its_command_its_outcome_and_its_payload_as_sent(string json, string id, bool succeeded, string? payload)
    {
        Assert.True(CommandWire.TryParseResult(Encoding.UTF8.GetBytes(json), out var result));
        Assert.Equal(new DeviceResult(id, succeeded, payload), result);
    }

    [Theory]
    [InlineData("")]
    [InlineData("not json")]
    [InlineData("{\"id\":\"c1\",\"status\":")]
    [InlineData("[{\"id\":\"c1\",\"status\":\"succeeded\"}]")]
    [InlineData("\"c1\"")]
    [InlineData("{\"status\":\"succeeded\"}")]
    [InlineData("{\"id\":\"\",\"status\":\"succeeded\"}")]
    [InlineData("{\"id\":7,\"status\":\"succeeded\"}")]
    [InlineData("{\"id\":\"c1\"}")]
    [InlineData("{\"id\":\"c1\",\"status\":\"done\"}")]
    [InlineData("{\"id\":\"c1\",\"status\":\"SUCCEEDED\"}")]
    [InlineData("{\"id\":\"c1\",\"status\":true}")]
    public void Anything_else_is_not_a_result(string json)
    {
        Assert.False(CommandWire.TryParseResult(Encoding.UTF8.GetBytes(json), out _));
    }

    [Fact]
    public void A_result_nested_deeper_than_the_limit_is_refused()
    {
        string Nested(int depth) => "{\"id\":\"c1\",\"status\":\"failed\",\"payload\":" + string.Concat(Enumerable.Repeat("[", depth - 2)) + string.Concat(Enumerable.Repeat("]", depth - 2)) + "}";

        // The object is one level, the array levels come on top.
        Assert.True(CommandWire.TryParseResult(Encoding.UTF8.GetBytes(Nested(CommandWire.MaxResultDepth + 1)), out _));
        Assert.False(CommandWire.TryParseResult(Encoding.UTF8.GetBytes(Nested(CommandWire.MaxResultDepth + 2)), out _));
    }

    private static CommandEntry Entry(bool binary, byte[] payload) => new()
    {
        Id = "0123abcd",
        Device = "d1",
        Name = "blink",
        Binary = binary,
        Payload = payload,
        QoS = 2,
        CreatedAt = new DateTimeOffset(2026, 1, 1, 11, 0, 0, TimeSpan.Zero),
        ExpiresAt = new DateTimeOffset(2026, 1, 1, 12, 0, 0, 250, TimeSpan.Zero),
        State = CommandState.Queued,
    };
}
