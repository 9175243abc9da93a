namespace Relay.Server.Mqtt;

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
