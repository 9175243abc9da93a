namespace Relay.Mqtt.Identity;

/// <summary>Upserts the devices named in <c>Relay:Mqtt:Devices</c> into the registry at start.</summary>
internal sealed class MqttDeviceProvisioning(IDeviceRegistry registry, MqttOptions options) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) =>
        options.Enabled ? DeviceCommands.ProvisionConfiguredDevicesAsync(registry, options, cancellationToken) : Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
