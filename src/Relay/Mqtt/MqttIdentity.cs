namespace Relay.Server.Mqtt;

// Who a client is and what it may do. The engine consults only these types and the authorizer seam,
// so another identity provider can replace the embedded one.

/// <summary>What kind of principal a connection authenticated as.</summary>
internal enum MqttPrincipalKind
{
    /// <summary>A registered device: confined to <c>devices/{id}/#</c> plus explicit grants.</summary>
    Device,

    /// <summary>A configured back-end account with wider grants.</summary>
    Service,

    /// <summary>No credentials, accepted because <c>Relay:Mqtt:AllowAnonymous</c> is true.</summary>
    Anonymous,

    /// <summary>Accepted by the HTTP authentication hook; grants come from the ACL rules only.</summary>
    External,
}

/// <summary>Actions an ACL rule or grant covers.</summary>
[Flags]
internal enum MqttAction
{
    /// <summary>PUBLISH to a topic.</summary>
    Publish = 1,

    /// <summary>SUBSCRIBE to a filter.</summary>
    Subscribe = 2,

    /// <summary>Both.</summary>
    All = Publish | Subscribe,
}

/// <summary>A topic filter and the actions allowed on it.</summary>
internal readonly record struct MqttGrant(string TopicFilter, MqttAction Actions);

/// <summary>An authenticated connection's identity; immutable and shared, never per-packet.</summary>
internal sealed record MqttIdentity(MqttPrincipalKind Kind, string Name, IReadOnlyList<MqttGrant> Grants)
{
    /// <summary>
    /// Who owns a session this identity creates (<c>Device:pi-kitchen</c>, <c>Service:backend</c>): a
    /// session is resumed or taken over only by a connection of the same owner.
    /// </summary>
    public string Owner { get; } = OwnerOf(Kind, Name);

    /// <summary>The owner string of a device's own session.</summary>
    public static string DeviceOwner(string deviceId) => OwnerOf(MqttPrincipalKind.Device, deviceId);

    /// <summary>Whether <paramref name="owner"/> is the device <paramref name="deviceId"/> itself (no allocation).</summary>
    public static bool IsDeviceOwner(string? owner, string deviceId) =>
        owner is not null && owner.Length == DevicePrefix.Length + deviceId.Length
        && owner.StartsWith(DevicePrefix, StringComparison.Ordinal) && owner.AsSpan(DevicePrefix.Length).SequenceEqual(deviceId);

    private const string DevicePrefix = "Device:";

    private static string OwnerOf(MqttPrincipalKind kind, string name) => kind switch
    {
        MqttPrincipalKind.Device => DevicePrefix + name,
        MqttPrincipalKind.Service => "Service:" + name,
        MqttPrincipalKind.External => "External:" + name,
        _ => "Anonymous",
    };
}

/// <summary>Ordered ACL evaluation. Called per PUBLISH and per SUBSCRIBE filter, so it must not allocate on the hot path.</summary>
internal interface IMqttAuthorizer
{
    /// <summary>May this client publish to <paramref name="topic"/> (a topic name, no wildcards)?</summary>
    bool CanPublish(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic);

    /// <summary>May this client subscribe to <paramref name="topicFilter"/> (wildcards allowed; <c>$share/g/</c> already stripped)?</summary>
    bool CanSubscribe(MqttIdentity identity, string clientId, ReadOnlySpan<char> topicFilter);
}
