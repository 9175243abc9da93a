using Relay.Server.Hosting;

namespace Relay.Server.Mqtt.Identity;

/// <summary>Upserts the devices named in <c>Relay:Mqtt:Devices</c> into the registry at start.</summary>
internal static class MqttDeviceProvisioning
{
    /// <summary>
    /// Upserts <c>Relay:Mqtt:Devices</c> into the registry at startup: new ids are added, and a known id
    /// whose configured secret no longer verifies gets it (so editing the configuration rotates a secret,
    /// while an unchanged one costs one verification, not a new hash each start).
    /// </summary>
    public static async Task ProvisionConfiguredDevicesAsync(IDeviceRegistry registry, MqttOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentNullException.ThrowIfNull(options);
        for (var i = 0; i < options.Devices.Count; i++)
        {
            var device = options.Devices[i];
            var key = $"{MqttOptions.SectionName}:Devices:{i}";
            if (!DeviceId.IsValid(device.Id))
            {
                throw new RelayConfigurationException($"{key}:Id: '{device.Id}' must match [A-Za-z0-9._-]{{1,{DeviceId.MaxLength}}}");
            }

            if (string.IsNullOrEmpty(device.Secret))
            {
                throw new RelayConfigurationException($"{key}:Secret: must not be empty");
            }

            if (await registry.AddAsync(device.Id, device.Secret, [], cancellationToken).ConfigureAwait(false))
            {
                continue;
            }

            if (await registry.VerifySecretAsync(device.Id, System.Text.Encoding.UTF8.GetBytes(device.Secret), cancellationToken).ConfigureAwait(false) == SecretCheck.Mismatch)
            {
                await registry.SetSecretAsync(device.Id, device.Secret, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
