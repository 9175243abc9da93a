using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Relay.Server.Mqtt;

// The seams between the MQTT session engine and what it consults: who a client is (authenticator),
// what it may do (authorizer) and what survives a restart (stores). The engine depends only on these
// interfaces, so another store or identity provider can replace the embedded SQLite ones.

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

/// <summary>What a CONNECT carried that authentication may look at.</summary>
internal sealed record MqttAuthRequest(
    string ClientId,
    string? Username,
    ReadOnlyMemory<byte>? Password,
    IPEndPoint? RemoteEndPoint,
    X509Certificate2? ClientCertificate,
    byte ProtocolVersion);

/// <summary>Outcome of authentication, mapped by the engine to CONNACK codes.</summary>
internal enum MqttAuthOutcome
{
    /// <summary>Accepted; <see cref="MqttAuthResult.Identity"/> is set.</summary>
    Allow,

    /// <summary>Unknown user or wrong password: v3.1.1 0x04, v5 0x86.</summary>
    BadCredentials,

    /// <summary>Known but not allowed (e.g. client id differs from device id, anonymous off): v3.1.1 0x05, v5 0x87.</summary>
    NotAuthorized,

    /// <summary>Too many failed attempts from this IP: v3.1.1 0x05, v5 0x9F (Connection rate exceeded).</summary>
    RateLimited,

    /// <summary>The identity provider could not answer (hook down): v3.1.1 0x03, v5 0x88.</summary>
    Unavailable,

    /// <summary>Not checked now: the slow-hash pool is full (a reconnect storm). v3.1.1 0x03, v5 0x89 Server busy.</summary>
    Busy,
}

/// <summary>Result of <see cref="IMqttAuthenticator.AuthenticateAsync"/>.</summary>
internal readonly record struct MqttAuthResult(MqttAuthOutcome Outcome, MqttIdentity? Identity, string? Reason)
{
    public static MqttAuthResult Allowed(MqttIdentity identity) => new(MqttAuthOutcome.Allow, identity, null);

    public static MqttAuthResult Denied(MqttAuthOutcome outcome, string reason) => new(outcome, null, reason);
}

/// <summary>Decides whether a CONNECT is accepted. Implementations count and rate-limit failures per source IP.</summary>
internal interface IMqttAuthenticator
{
    ValueTask<MqttAuthResult> AuthenticateAsync(MqttAuthRequest request, CancellationToken cancellationToken);
}

/// <summary>Ordered ACL evaluation. Called per PUBLISH and per SUBSCRIBE filter, so it must not allocate on the hot path.</summary>
internal interface IMqttAuthorizer
{
    /// <summary>May this client publish to <paramref name="topic"/> (a topic name, no wildcards)?</summary>
    bool CanPublish(MqttIdentity identity, string clientId, ReadOnlySpan<char> topic);

    /// <summary>May this client subscribe to <paramref name="topicFilter"/> (wildcards allowed; <c>$share/g/</c> already stripped)?</summary>
    bool CanSubscribe(MqttIdentity identity, string clientId, ReadOnlySpan<char> topicFilter);
}

/// <summary>MQTT 5 properties of an application message that travel with it and must be stored with it.</summary>
internal sealed record MqttMessageProperties(
    byte? PayloadFormatIndicator,
    string? ContentType,
    string? ResponseTopic,
    ReadOnlyMemory<byte>? CorrelationData,
    IReadOnlyList<KeyValuePair<string, string>>? UserProperties);

/// <summary>An application message at rest (queued, in flight, or retained). Owns its payload.</summary>
internal sealed record StoredMessage(
    string Topic,
    ReadOnlyMemory<byte> Payload,
    byte QoS,
    bool Retain,
    DateTimeOffset? ExpiresAt,
    MqttMessageProperties? Properties);

/// <summary>A persisted subscription of a session (the filter as the client sent it, <c>$share/</c> included).</summary>
internal sealed record PersistedSubscription(
    string TopicFilter,
    byte MaximumQoS,
    bool NoLocal,
    bool RetainAsPublished,
    byte RetainHandling,
    uint SubscriptionIdentifier);

/// <summary>An outbound message queued for (or in flight to) a session, in the order it must be delivered.</summary>
/// <param name="Sequence">Store-assigned, strictly increasing per session.</param>
/// <param name="PacketId">0 until sent; then the packet identifier used (resent with DUP after a reconnect).</param>
/// <param name="Released">QoS 2 only: PUBREC received, so PUBREL (not PUBLISH) is what to resend.</param>
internal sealed record PersistedMessage(long Sequence, StoredMessage Message, ushort PacketId, bool Released);

/// <summary>A persistent session as loaded on reconnect or at start.</summary>
internal sealed record PersistedSession(
    string ClientId,
    uint ExpiryIntervalSeconds,
    DateTimeOffset? DisconnectedAt,
    IReadOnlyList<PersistedSubscription> Subscriptions,
    IReadOnlyList<PersistedMessage> Messages,
    string? Owner = null);

/// <summary>
/// Persistent sessions. Every call that returns has been committed (WAL): a SIGKILL right after it
/// loses nothing. Implementations may batch concurrent calls into one transaction (group commit).
/// </summary>
internal interface IMqttSessionStore
{
    /// <summary>All persistent sessions (subscriptions and messages), at start.</summary>
    ValueTask<IReadOnlyList<PersistedSession>> LoadAllAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Creates or updates a session's expiry and owner (<see cref="MqttIdentity.Owner"/>; null keeps the
    /// stored one); <paramref name="disconnectedAt"/> null means online.
    /// </summary>
    ValueTask UpsertSessionAsync(string clientId, uint expiryIntervalSeconds, DateTimeOffset? disconnectedAt, string? owner, CancellationToken cancellationToken);

    /// <summary>Deletes a session with its subscriptions and messages (clean start, expiry).</summary>
    ValueTask DeleteSessionAsync(string clientId, CancellationToken cancellationToken);

    /// <summary>Adds or replaces (same filter) a subscription.</summary>
    ValueTask UpsertSubscriptionAsync(string clientId, PersistedSubscription subscription, CancellationToken cancellationToken);

    ValueTask RemoveSubscriptionAsync(string clientId, string topicFilter, CancellationToken cancellationToken);

    /// <summary>Appends one message per (client, message) pair in one transaction; returns their sequences in order.</summary>
    ValueTask<long[]> EnqueueAsync(IReadOnlyList<(string ClientId, StoredMessage Message)> messages, CancellationToken cancellationToken);

    /// <summary>Records that a queued message went out with <paramref name="packetId"/> (and, for QoS 2, whether PUBREC came back).</summary>
    ValueTask MarkSentAsync(string clientId, long sequence, ushort packetId, bool released, CancellationToken cancellationToken);

    /// <summary>Removes a delivered (PUBACK / PUBCOMP), expired or dropped message.</summary>
    ValueTask RemoveMessageAsync(string clientId, long sequence, CancellationToken cancellationToken);
}

/// <summary>Retained messages, one per topic.</summary>
internal interface IMqttRetainedStore
{
    ValueTask<IReadOnlyList<StoredMessage>> LoadAllAsync(CancellationToken cancellationToken);

    /// <summary>Sets the retained message of <paramref name="message"/>'s topic; an empty payload deletes it [MQTT-3.3.1-6].</summary>
    ValueTask SetAsync(StoredMessage message, CancellationToken cancellationToken);
}

/// <summary>A registered device. <paramref name="Tags"/> group devices for filters and broadcast (see <see cref="Identity.DeviceTags"/>).</summary>
internal sealed record DeviceRecord(string Id, DateTimeOffset CreatedAt, IReadOnlyList<MqttGrant> ExtraGrants, bool Disabled, IReadOnlyList<string> Tags);

/// <summary>
/// The device registry. Secrets are stored only as salted hashes (one keyed hash for generated secrets,
/// PBKDF2-SHA256 for chosen ones) and compared in constant time.
/// </summary>
internal interface IDeviceRegistry
{
    /// <summary>Registers a device; false when the id exists.</summary>
    ValueTask<bool> AddAsync(string deviceId, string secret, IReadOnlyList<MqttGrant> extraGrants, CancellationToken cancellationToken);

    /// <summary>Registers a device with tags (validated by <see cref="Identity.DeviceTags"/>); false when the id exists.</summary>
    ValueTask<bool> AddAsync(string deviceId, string secret, IReadOnlyList<MqttGrant> extraGrants, IReadOnlyList<string> tags, CancellationToken cancellationToken);

    /// <summary>Replaces a device's tags (validated by <see cref="Identity.DeviceTags"/>); false when unknown.</summary>
    ValueTask<bool> SetTagsAsync(string deviceId, IReadOnlyList<string> tags, CancellationToken cancellationToken);

    /// <summary>
    /// One page of devices ordered by id: those with id greater than <paramref name="after"/> (null: from
    /// the start) carrying <paramref name="tag"/> (null: any), at most <paramref name="limit"/>. The next
    /// page starts after the last id returned; a page shorter than <paramref name="limit"/> is the last.
    /// </summary>
    ValueTask<IReadOnlyList<DeviceRecord>> ListAsync(string? tag, string? after, int limit, CancellationToken cancellationToken);

    /// <summary>Replaces a device's secret; false when unknown.</summary>
    ValueTask<bool> SetSecretAsync(string deviceId, string secret, CancellationToken cancellationToken);

    ValueTask<bool> RemoveAsync(string deviceId, CancellationToken cancellationToken);

    ValueTask<DeviceRecord?> FindAsync(string deviceId, CancellationToken cancellationToken);

    ValueTask<IReadOnlyList<DeviceRecord>> ListAsync(CancellationToken cancellationToken);

    /// <summary>Whether the secret is the device's; <see cref="Identity.SecretCheck.Busy"/> when it could not be checked now.</summary>
    ValueTask<Identity.SecretCheck> VerifySecretAsync(string deviceId, ReadOnlyMemory<byte> secretUtf8, CancellationToken cancellationToken);
}
