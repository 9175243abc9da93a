using System.Text.Json;

namespace Relay.DeviceClient;

/// <summary>A message the server delivered on a topic the device subscribed with <see cref="RelayDeviceClient.SubscribeAsync"/>.</summary>
public sealed class DeviceMessage
{
    internal DeviceMessage(string topic, ReadOnlyMemory<byte> payload, bool retain)
    {
        Topic = topic;
        Payload = payload;
        Retain = retain;
    }

    /// <summary>The topic it was published to.</summary>
    public string Topic { get; }

    /// <summary>The payload, owned by this message.</summary>
    public ReadOnlyMemory<byte> Payload { get; }

    /// <summary>Whether it is a retained message the server sent because of the subscription.</summary>
    public bool Retain { get; }
}

/// <summary>
/// What the back end wants the device to change: the members of the desired state that differ from what the
/// device last reported (docs/data.md, "Device state"). The device applies them and reports the new values
/// with <see cref="RelayDeviceClient.ReportStateAsync"/>; then the delta empties.
/// </summary>
public sealed class DesiredStateDelta
{
    internal DesiredStateDelta(long version, JsonElement state)
    {
        Version = version;
        State = state;
    }

    /// <summary>The version of the desired document this delta was computed from; grows with every change the back end makes.</summary>
    public long Version { get; }

    /// <summary>The delta as a JSON object, e.g. <c>{"interval": 5}</c>.</summary>
    public JsonElement State { get; }
}
